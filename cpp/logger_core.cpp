#include "logger_core.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

#include "errors.hpp"
#include "frames.hpp"

namespace ddl {

namespace {
std::string fmt_double(double v) {
    std::ostringstream os;
    os.precision(17);
    os << v;
    return os.str();
}
}  // namespace

LoggerCore::LoggerCore(LoggerOptions opts)
    : opts_(std::move(opts)),
      // A block never takes more than a quarter of the ring, so a tiny ring still pipelines.
      block_target_(std::max<size_t>(std::min(opts_.block_bytes, opts_.ring_bytes / 4), 4096)),
      queue_(opts_.ring_bytes) {
    // Opening the first segment here (not in the thread) makes an unwritable directory fail in
    // the constructor, with the path in the message.
    writer_ = std::make_unique<SegmentWriter>(opts_.dir, opts_.rotate_bytes, opts_.zstd_level);
    written_segments_ = writer_->segments();
    written_bytes_ = writer_->bytes_written();
    thread_ = std::thread([this] { writer_main(); });
}

LoggerCore::~LoggerCore() {
    try {
        close();
    } catch (...) {
        // A destructor cannot report; close() already kept _DONE from being written.
    }
    if (thread_.joinable()) thread_.join();
}

void LoggerCore::set_failure(const std::string& msg, int err) {
    {
        std::lock_guard<std::mutex> lk(failure_mu_);
        if (!failed_.load()) {
            failure_ = msg;
            failure_errno_ = err;
        }
        failed_ = true;
    }
    queue_.fail();
}

void LoggerCore::writer_main() {
    using Clock = BlockQueue::Clock;
    const auto interval = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(std::max(opts_.flush_interval, 0.001)));
    auto deadline = Clock::now() + interval;
    try {
        QueueItem item;
        for (;;) {
            const auto r = queue_.pop(item, deadline);
            if (r == BlockQueue::PopResult::Finished) break;
            if (r == BlockQueue::PopResult::Item) {
                if (item.kind == QueueItem::Kind::Registration) {
                    writer_->add_registration(item.payload);
                } else {
                    writer_->write_block(item.payload.data(), item.payload.size(), item.n_records);
                    queue_.give_back(std::move(item.payload), block_target_ * 2);
                }
                written_blocks_ = writer_->blocks();
                written_bytes_ = writer_->bytes_written();
                written_segments_ = writer_->segments();
                queue_.mark_done(item.ticket);
            }
            if (Clock::now() >= deadline) {
                // Bounded loss: seal the partly filled block. try_lock, because a producer may
                // hold the encoder lock while it waits for this thread to free queue space.
                if (encode_mu_.try_lock()) {
                    try {
                        seal_locked(true);
                    } catch (...) {
                        encode_mu_.unlock();
                        throw;
                    }
                    encode_mu_.unlock();
                    deadline = Clock::now() + interval;
                } else {
                    deadline = Clock::now() + std::chrono::milliseconds(5);
                }
            }
        }
        writer_->close();
        written_bytes_ = writer_->bytes_written();
    } catch (const WriterFailure& e) {
        set_failure(e.what(), e.error_number);
    } catch (const std::exception& e) {
        set_failure(std::string("writer thread failed: ") + e.what(), 0);
    } catch (...) {
        set_failure("writer thread failed with an unknown error", 0);
    }
}

void LoggerCore::throw_if_unusable() {
    if (closed_.load()) throw ClosedError("the logger is closed; open a new DataLogger to record more");
    if (failed_.load()) {
        std::lock_guard<std::mutex> lk(failure_mu_);
        failure_reported_ = true;
        throw WriterFailure("the logger's writer failed: " + failure_ +
                                " (data flushed before the failure is intact; _DONE will not be written)",
                            failure_errno_);
    }
}

LoggerCore::Stream& LoggerCore::stream_locked(uint32_t sid) {
    if (sid >= streams_.size())
        throw UnknownStream("unknown stream id " + std::to_string(sid) + " (this logger has " +
                            std::to_string(streams_.size()) + " streams; register it first)");
    return streams_[sid];
}

void LoggerCore::invalid(uint32_t sid, const std::string& what) {
    const std::string name = sid < streams_.size() ? streams_[sid].name : std::string();
    throw InvalidInput("stream " + std::to_string(sid) + (name.empty() ? "" : " (" + name + ")") +
                       ": " + what);
}

uint32_t LoggerCore::register_stream(const std::string& name, double epoch_scale,
                                     double value_scale, bool exact, bool periodic,
                                     const std::string& json) {
    std::lock_guard<std::mutex> lk(encode_mu_);
    throw_if_unusable();
    if (!(std::isfinite(epoch_scale) && epoch_scale > 0))
        throw InvalidInput("stream " + name + ": epoch_scale must be a positive finite number (got " +
                           fmt_double(epoch_scale) + ")");
    if (!exact && !(std::isfinite(value_scale) && value_scale > 0))
        throw InvalidInput("stream " + name + ": value_scale must be a positive finite number or None (got " +
                           fmt_double(value_scale) + ")");
    if (json.size() > kMaxJson) throw InvalidInput("stream " + name + ": labels are too large");
    if (streams_.size() >= (size_t(1) << 31)) throw InvalidInput("too many streams in one logger");
    const uint32_t sid = uint32_t(streams_.size());
    RegistrationInfo info;
    info.stream_id = sid;
    info.epoch_scale = epoch_scale;
    info.value_scale = value_scale;
    info.exact = exact;
    info.periodic = periodic;
    info.json = json;
    QueueItem item;
    item.kind = QueueItem::Kind::Registration;
    append_registration(item.payload, info);
    double waited = 0;
    // Before any block holding this stream's records: the current block is pushed later.
    if (queue_.push(std::move(item), true, waited) == 0) throw_if_unusable();
    streams_.push_back(Stream{name, epoch_scale, exact ? 0.0 : value_scale, exact, {}, {}});
    return sid;
}

int64_t LoggerCore::epoch_to_tick(uint32_t sid, double epoch) {
    std::lock_guard<std::mutex> lk(encode_mu_);
    return tick_locked(sid, epoch);
}

int64_t LoggerCore::tick_locked(uint32_t sid, double epoch) {
    const Stream& s = stream_locked(sid);
    int64_t tick;
    if (!std::isfinite(epoch)) invalid(sid, "epoch " + fmt_double(epoch) + " is not finite");
    if (!quantise(epoch, s.epoch_scale, tick))
        invalid(sid, "epoch " + fmt_double(epoch) + " overflows int64 ticks with epoch_scale=" +
                         fmt_double(s.epoch_scale));
    return tick;
}

void LoggerCore::prepare(uint32_t sid, const int64_t* idx, const double* vals, size_t n,
                         PreparedRecord& out, bool quantise_values) {
    std::lock_guard<std::mutex> lk(encode_mu_);
    prepare_locked(sid, idx, vals, n, out, quantise_values);
}

void LoggerCore::prepare_locked(uint32_t sid, const int64_t* idx, const double* vals, size_t n,
                                PreparedRecord& out, bool quantise_values) {
    const Stream& s = stream_locked(sid);
    const bool exact = s.exact;
    const double scale = s.value_scale;
    if (n > kMaxNnz)
        invalid(sid, "a record holds at most " + std::to_string(kMaxNnz) + " non-zeros (got " +
                         std::to_string(n) + "); split it into several records");
    out.indices.resize(n);
    out.values.resize(n);
    bool sorted = true;
    for (size_t i = 0; i < n; ++i) {
        if (idx[i] < 0)
            invalid(sid, "index " + std::to_string(idx[i]) + " at position " + std::to_string(i) +
                             " is negative; indices must be >= 0");
        if (i > 0 && idx[i] <= idx[i - 1]) sorted = false;
    }
    const size_t* order = nullptr;
    if (!sorted) {
        out.order.resize(n);
        std::iota(out.order.begin(), out.order.end(), size_t(0));
        std::sort(out.order.begin(), out.order.end(),
                  [idx](size_t a, size_t b) { return idx[a] < idx[b]; });
        order = out.order.data();
        for (size_t i = 1; i < n; ++i)
            if (idx[order[i]] == idx[order[i - 1]])
                invalid(sid, "index " + std::to_string(idx[order[i]]) +
                                 " appears more than once; indices must be unique");
    }
    for (size_t i = 0; i < n; ++i) {
        const size_t src = order ? order[i] : i;
        out.indices[i] = idx[src];
        const double v = vals[src];
        if (exact) {
            out.values[i] = f64_bits(v);
            continue;
        }
        if (!std::isfinite(v))
            invalid(sid, "value " + fmt_double(v) + " at index " + std::to_string(idx[src]) +
                             " is not finite; a quantised stream (value_scale=" + fmt_double(scale) +
                             ") cannot store NaN or infinity (register it with value_scale=None "
                             "to store values exactly)");
        if (!quantise_values) {
            out.values[i] = f64_bits(v);
            continue;
        }
        int64_t q;
        if (!quantise(v, scale, q))
            invalid(sid, "value " + fmt_double(v) + " at index " + std::to_string(idx[src]) +
                             " overflows int64 after quantisation with value_scale=" +
                             fmt_double(scale));
        out.values[i] = uint64_t(q);
    }
}

void LoggerCore::encode_locked(Stream& s, uint32_t sid, int64_t tick, const int64_t* idx,
                               const uint64_t* vals, size_t n) {
    if (block_records_ > 0 && block_.size() + record_bound(n) > kMaxRawBlock) seal_locked(false);
    const size_t before = block_.size();
    encode_record(block_, sid, s.exact, s.pred, generation_, tick, idx, vals, n);
    ++block_records_;
    ++records_;
    nonzeros_ += n;
    raw_bytes_ += block_.size() - before;
    const double epoch = double(tick) * s.epoch_scale;
    StreamCounters& c = s.counters;
    if (c.records == 0 || epoch < c.min_epoch) c.min_epoch = epoch;
    if (c.records == 0 || epoch > c.max_epoch) c.max_epoch = epoch;
    ++c.records;
    if (block_.size() >= block_target_) seal_locked(false);
}

void LoggerCore::seal_locked(bool from_writer) {
    if (block_records_ == 0) return;
    QueueItem item;
    item.kind = QueueItem::Kind::Block;
    item.payload = std::move(block_);
    item.n_records = block_records_;
    block_ = queue_.take_buffer();
    block_records_ = 0;
    ++generation_;  // the next block starts without predecessors
    double waited = 0;
    const uint64_t ticket = queue_.push(std::move(item), from_writer, waited);
    if (waited > 0) {
        ++stalls_;
        stall_seconds_ += waited;
    }
    if (ticket == 0 && !from_writer) throw_if_unusable();
}

void LoggerCore::record(uint32_t sid, double epoch, const int64_t* idx, const double* vals,
                        size_t n) {
    std::lock_guard<std::mutex> lk(encode_mu_);
    throw_if_unusable();
    const int64_t tick = tick_locked(sid, epoch);
    prepare_locked(sid, idx, vals, n, scratch_, true);
    encode_locked(streams_[sid], sid, tick, scratch_.indices.data(), scratch_.values.data(), n);
}

void LoggerCore::record_tick(uint32_t sid, int64_t tick, const int64_t* idx, const double* vals,
                             size_t n) {
    std::lock_guard<std::mutex> lk(encode_mu_);
    throw_if_unusable();
    prepare_locked(sid, idx, vals, n, scratch_, true);
    encode_locked(streams_[sid], sid, tick, scratch_.indices.data(), scratch_.values.data(), n);
}

void LoggerCore::record_many(const uint32_t* sids, size_t n_sids, const double* epochs,
                             size_t n_records, const int64_t* offsets, const int64_t* idx,
                             const double* vals) {
    if (n_sids != 1 && n_sids != n_records)
        throw InvalidInput("record_many: stream_ids must hold one id or one per record (got " +
                           std::to_string(n_sids) + " for " + std::to_string(n_records) +
                           " records)");
    if (n_records > 0 && offsets[0] != 0)
        throw InvalidInput("record_many: offsets must start at 0");
    for (size_t k = 0; k < n_records; ++k)
        if (offsets[k + 1] < offsets[k])
            throw InvalidInput("record_many: offsets must not decrease (record " +
                               std::to_string(k) + ")");
    // Two passes so that a bad record leaves nothing of the batch behind: validate every record
    // (writing nothing), then prepare each again and encode it. Preparing twice costs less than
    // staging the whole batch, which for large batches meant tens of MB of cache-cold copies.
    std::lock_guard<std::mutex> lk(encode_mu_);
    throw_if_unusable();
    if (bulk_ticks_.size() < n_records) bulk_ticks_.resize(n_records);
    int64_t* ticks = bulk_ticks_.data();
    for (size_t k = 0; k < n_records; ++k) {
        const uint32_t sid = n_sids == 1 ? sids[0] : sids[k];
        try {
            ticks[k] = tick_locked(sid, epochs[k]);
            const size_t a = size_t(offsets[k]), n = size_t(offsets[k + 1] - offsets[k]);
            prepare_locked(sid, idx + a, vals + a, n, scratch_, true);
        } catch (const InvalidInput& e) {
            throw InvalidInput(std::string(e.what()) + " (record " + std::to_string(k) +
                               " of the batch; nothing of the batch was recorded)");
        }
    }
    for (size_t k = 0; k < n_records; ++k) {
        const uint32_t sid = n_sids == 1 ? sids[0] : sids[k];
        const size_t a = size_t(offsets[k]), n = size_t(offsets[k + 1] - offsets[k]);
        prepare_locked(sid, idx + a, vals + a, n, scratch_, true);
        encode_locked(streams_[sid], sid, ticks[k], scratch_.indices.data(),
                      scratch_.values.data(), n);
    }
    if (bulk_ticks_.size() > (size_t(1) << 20)) std::vector<int64_t>().swap(bulk_ticks_);
}

void LoggerCore::check_stream(uint32_t sid) {
    std::lock_guard<std::mutex> lk(encode_mu_);
    throw_if_unusable();
    stream_locked(sid);
}

void LoggerCore::flush() {
    uint64_t ticket;
    {
        std::lock_guard<std::mutex> lk(encode_mu_);
        throw_if_unusable();
        seal_locked(false);
        ticket = queue_.last_ticket();
    }
    queue_.wait_done(ticket);
    std::lock_guard<std::mutex> lk(encode_mu_);
    if (failed_.load()) throw_if_unusable();
}

void LoggerCore::close() {
    std::lock_guard<std::mutex> close_lk(close_mu_);
    if (closed_.load()) return;
    {
        std::lock_guard<std::mutex> lk(encode_mu_);
        if (!failed_.load()) {
            try {
                seal_locked(false);
            } catch (const WriterFailure&) {
                // reported below, after the thread has stopped
            }
        }
        closed_ = true;
    }
    queue_.finish();
    if (thread_.joinable()) thread_.join();
    if (failed_.load()) {
        std::lock_guard<std::mutex> lk(failure_mu_);
        const bool already = failure_reported_;
        failure_reported_ = true;
        if (!already)
            throw WriterFailure("the logger's writer failed: " + failure_ +
                                    " (data flushed before the failure is intact; _DONE was not written)",
                                failure_errno_);
        return;
    }
    const std::string done = opts_.dir + "/_DONE";
    const int fd = ::open(done.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        const int err = errno;
        throw WriterFailure("cannot write '" + done + "': " + std::strerror(err), err);
    }
    ::fsync(fd);
    ::close(fd);
    fsync_directory(opts_.dir);
}

LoggerStats LoggerCore::stats() {
    LoggerStats st;
    {
        std::lock_guard<std::mutex> lk(encode_mu_);
        st.records = records_;
        st.nonzeros = nonzeros_;
        st.raw_bytes = raw_bytes_;
        st.stalls = stalls_;
        st.stall_seconds = stall_seconds_;
        st.streams = streams_.size();
    }
    st.compressed_bytes = written_bytes_.load();
    st.blocks = written_blocks_.load();
    st.segments = written_segments_.load();
    st.queue_peak_bytes = queue_.peak_bytes();
    return st;
}

std::vector<StreamCounters> LoggerCore::stream_counters(const std::vector<uint32_t>* ids) {
    std::lock_guard<std::mutex> lk(encode_mu_);
    std::vector<StreamCounters> out;
    if (ids) {
        out.reserve(ids->size());
        for (uint32_t sid : *ids) out.push_back(stream_locked(sid).counters);
    } else {
        out.reserve(streams_.size());
        for (const auto& s : streams_) out.push_back(s.counters);
    }
    return out;
}

size_t LoggerCore::stream_count() {
    std::lock_guard<std::mutex> lk(encode_mu_);
    return streams_.size();
}

std::string LoggerCore::stream_name(uint32_t sid) {
    std::lock_guard<std::mutex> lk(encode_mu_);
    return stream_locked(sid).name;
}

double LoggerCore::stream_epoch_scale(uint32_t sid) {
    std::lock_guard<std::mutex> lk(encode_mu_);
    return stream_locked(sid).epoch_scale;
}

}  // namespace ddl
