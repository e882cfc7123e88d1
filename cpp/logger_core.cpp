#include "logger_core.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>
#include <system_error>

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include "errors.hpp"

namespace ddl {

namespace {
std::string fmt_double(double v) {
    std::ostringstream os;
    os.precision(17);
    os << v;
    return os.str();
}

// Counts fork()s of this process image: a child sees a different value than its parent saw when
// it created a logger. Checked with one relaxed load before any lock is taken, because in the
// child the parent's threads are gone and any lock they held stays locked.
std::atomic<uint64_t> g_fork_generation{0};
std::once_flag g_atfork_once;
void on_fork_child() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }

uint64_t current_fork_generation() {
    std::call_once(g_atfork_once, [] { ::pthread_atfork(nullptr, nullptr, on_fork_child); });
    return g_fork_generation.load(std::memory_order_relaxed);
}

constexpr size_t kLabelsBytesMax = kMaxJson;  // labels of one stream (names + JSON values)
}  // namespace

uint32_t LoggerCore::StreamTable::add(std::unique_ptr<Stream> s) {
    if (head_ == slots_.size()) {  // no live stream: start the window at the new id
        slots_.clear();
        head_ = 0;
        base_ = next_;
    }
    slots_.push_back(std::move(s));
    ++live_;
    return next_++;
}

void LoggerCore::StreamTable::retire(uint32_t sid) {
    if (sid < base_ || sid >= next_) return;
    auto& slot = slots_[head_ + (sid - base_)];
    if (!slot) return;
    slot.reset();
    --live_;
    while (head_ < slots_.size() && !slots_[head_]) {
        ++head_;
        ++base_;
    }
    if (head_ == slots_.size()) {
        slots_.clear();
        head_ = 0;
    } else if (head_ >= 1024 && head_ * 2 >= slots_.size()) {
        slots_.erase(slots_.begin(), slots_.begin() + ptrdiff_t(head_));
        head_ = 0;
    }
    if (slots_.capacity() > 4096 && slots_.capacity() > 4 * slots_.size()) slots_.shrink_to_fit();
}

LoggerCore::LoggerCore(const LoggerOptions& opts)
    : opts_(opts),
      fork_generation_(current_fork_generation()),
      // FORMAT.md section 6: a block holds at most block_bytes, never more than rotate_bytes, and
      // never more than the format's bound. The settings were checked by the caller.
      block_target_(size_t(std::min<uint64_t>(
          std::min<uint64_t>(opts_.block_bytes, opts_.rotate_bytes), kMaxRawBlock))),
      queue_(opts_.ring_bytes),
      // Sections come back from the writer a block at a time; the pool holds about two blocks of
      // them (their buffers grow to twice what they hold), so a steady logger reuses them all.
      pool_(4 * block_target_ + (size_t(1) << 20)),
      block_(pool_) {
    if (opts_.block_bytes == 0 || opts_.ring_bytes == 0 || opts_.rotate_bytes == 0)
        throw InvalidInput("ring_bytes, block_bytes and rotate_bytes must be positive");
    // Opening the first segment here (not in the thread) makes an unwritable directory fail in
    // the constructor, with the path in the message.
    writer_ = std::make_unique<SegmentWriter>(opts_.dir, opts_.rotate_bytes, opts_.zstd_level);
    written_segments_ = writer_->segments();
    written_bytes_ = writer_->bytes_written();
    try {
        thread_ = std::thread([this] { writer_main(); });
    } catch (const std::system_error& e) {
        // No thread was started, so nothing is left to join; the segment opened above is closed
        // by writer_'s destructor.
        throw WriterFailure("cannot start the writer thread of '" + opts_.dir + "': " + e.what() +
                                " (too many threads or too little memory for its stack)",
                            e.code().value());
    }
}

LoggerCore::~LoggerCore() {
    // In a forked child the bindings never destroy a logger (its thread and locks are the
    // parent's); this runs in the process that created it.
    try {
        close();
    } catch (...) {
        // A destructor cannot report; close() already kept _DONE from being written.
    }
    if (thread_.joinable()) thread_.join();
}

bool LoggerCore::forked() const {
    return g_fork_generation.load(std::memory_order_relaxed) != fork_generation_;
}

void LoggerCore::check_fork() const {
    if (forked())
        throw ForkedError(
            "this DataLogger was created in another process (process " + std::to_string(::getpid()) +
            " is a fork of it): its writer thread exists only there. Create a new DataLogger in "
            "this process, in its own directory; the parent's logger keeps writing");
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
                switch (item.kind) {
                    case QueueItem::Kind::Block:
                        writer_->write_block(item.block);
                        pool_.give_back(item.block.sections);
                        if (!item.retired.empty()) writer_->retire(item.retired);
                        break;
                    case QueueItem::Kind::Registrations:
                        for (auto& reg : item.registrations) writer_->add_registration(std::move(reg));
                        break;
                    case QueueItem::Kind::Retire:
                        writer_->retire(item.retired);
                        break;
                    case QueueItem::Kind::Sync:
                        writer_->write_pending();
                        break;
                }
                item.retired.clear();
                written_blocks_ = writer_->blocks();
                written_bytes_ = writer_->bytes_written();
                written_segments_ = writer_->segments();
                queue_.mark_done(item.ticket);
            }
            if (Clock::now() >= deadline) {
                // Bounded loss: seal the partly filled block. try_lock, because a producer may
                // hold the encoder lock while it waits for this thread to free queue space.
                if (encode_mu_.try_lock()) {
                    std::vector<Registration> regs;
                    try {
                        regs.swap(new_registrations_);
                        new_registration_bytes_ = 0;
                        seal_locked(true);
                        hand_over_registrations_locked();  // retirements, if no block took them
                    } catch (...) {
                        encode_mu_.unlock();
                        throw;
                    }
                    encode_mu_.unlock();
                    // Streams registered but not yet recorded are written now (bounded loss); a
                    // block just queued comes after them in the file.
                    for (auto& reg : regs) writer_->add_registration(std::move(reg));
                    writer_->write_pending();
                    written_bytes_ = writer_->bytes_written();
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
    Stream* s = streams_.find(sid);
    if (s) return *s;
    if (sid < streams_.next_id())
        throw UnknownStream("stream " + std::to_string(sid) +
                            " was retired (retire_streams) and cannot be recorded into any more; "
                            "ids are never reused: register a new stream");
    throw UnknownStream("unknown stream id " + std::to_string(sid) + " (this logger has handed out ids 0 to " +
                        std::to_string(int64_t(streams_.next_id()) - 1) + "; register it first)");
}

void LoggerCore::invalid(uint32_t sid, const std::string& what) {
    const Stream* s = streams_.find(sid);
    const std::string name = s ? s->name : std::string();
    throw InvalidInput("stream " + std::to_string(sid) + (name.empty() ? "" : " (" + name + ")") +
                       ": " + what);
}

uint32_t LoggerCore::register_stream(const std::string& name, Registration reg) {
    check_fork();
    std::lock_guard<std::mutex> lk(encode_mu_);
    throw_if_unusable();
    if (!scale_ok(reg.epoch_scale))
        throw InvalidInput("stream " + name + ": epoch_scale must be a positive finite number (got " +
                           fmt_double(reg.epoch_scale) + ")");
    if (!reg.exact && !scale_ok(reg.value_scale))
        throw InvalidInput("stream " + name + ": value_scale must be a positive finite number or None (got " +
                           fmt_double(reg.value_scale) + ")");
    if (reg.periodic && !scale_ok(reg.periodicity))
        throw InvalidInput("stream " + name + ": periodicity must be a positive finite number (got " +
                           fmt_double(reg.periodicity) + ")");
    size_t label_bytes = 0;
    for (const Label& l : reg.labels) label_bytes += l.name.size() + l.value_json.size() + 8;
    if (label_bytes > kLabelsBytesMax)
        throw InvalidInput("stream " + name + ": labels take " + std::to_string(label_bytes) +
                           " bytes; the format allows " + std::to_string(kLabelsBytesMax >> 20) +
                           " MiB per stream");
    if (streams_.next_id() == UINT32_MAX) throw InvalidInput("too many streams in one logger");
    if (reg.exact) reg.value_scale = 0.0;
    auto s = std::make_unique<Stream>();
    s->name = name;
    s->epoch_scale = reg.epoch_scale;
    s->value_scale = reg.value_scale;
    s->exact = reg.exact;
    const uint32_t sid = streams_.next_id();
    reg.stream_id = sid;
    new_registrations_.push_back(std::move(reg));
    new_registration_bytes_ += label_bytes;
    streams_.add(std::move(s));
    // A logger that registers many streams and records little hands them over in batches.
    if (new_registration_bytes_ > block_target_ || new_registrations_.size() >= 4096)
        hand_over_registrations_locked();
    return sid;
}

void LoggerCore::hand_over_registrations_locked() {
    double waited = 0;
    if (!new_registrations_.empty()) {
        QueueItem item;
        item.kind = QueueItem::Kind::Registrations;
        item.bytes = new_registration_bytes_;
        item.registrations.swap(new_registrations_);
        new_registration_bytes_ = 0;
        // Registrations never wait for ring space; the writer writes them before the next block.
        queue_.push(std::move(item), true, waited);
    }
    if (block_.empty() && !retire_after_block_.empty()) {
        QueueItem item;
        item.kind = QueueItem::Kind::Retire;
        item.retired.swap(retire_after_block_);
        queue_.push(std::move(item), true, waited);
    }
}

void LoggerCore::retire_streams(const std::vector<uint32_t>& sids) {
    check_fork();
    std::lock_guard<std::mutex> lk(encode_mu_);
    std::vector<uint32_t> gone;
    for (uint32_t sid : sids) {
        if (!streams_.find(sid)) continue;
        streams_.retire(sid);
        gone.push_back(sid);
    }
    if (gone.empty() || failed_.load() || closed_.load()) return;
    // The open block may hold their records: the writer forgets them after writing it (or at the
    // next flush). Nothing wakes the writer here.
    retire_after_block_.insert(retire_after_block_.end(), gone.begin(), gone.end());
}

int64_t LoggerCore::epoch_to_tick(uint32_t sid, double epoch) {
    check_fork();
    std::lock_guard<std::mutex> lk(encode_mu_);
    return tick_locked(stream_locked(sid), sid, epoch);
}

int64_t LoggerCore::tick_locked(Stream& s, uint32_t sid, double epoch) {
    int64_t tick;
    if (!std::isfinite(epoch)) invalid(sid, "epoch " + fmt_double(epoch) + " is not finite");
    if (!quantise(epoch, s.epoch_scale, tick))
        invalid(sid, "epoch " + fmt_double(epoch) + " overflows int64 ticks with epoch_scale=" +
                         fmt_double(s.epoch_scale));
    return tick;
}

void LoggerCore::prepare(uint32_t sid, const int64_t* idx, const double* vals, size_t n,
                         PreparedRecord& out, bool quantise_values) {
    check_fork();
    std::lock_guard<std::mutex> lk(encode_mu_);
    prepare_locked(stream_locked(sid), sid, idx, vals, n, out, quantise_values);
}

void LoggerCore::prepare_locked(Stream& s, uint32_t sid, const int64_t* idx, const double* vals,
                                size_t n, PreparedRecord& out, bool quantise_values) {
    const bool exact = s.exact;
    const double scale = s.value_scale;
    if (n > kMaxRecordNnz)
        invalid(sid, "a record holds at most " + std::to_string(kMaxRecordNnz) + " non-zeros (got " +
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

LoggerCore::PreparedView LoggerCore::prepare_view_locked(Stream& s, uint32_t sid,
                                                        const int64_t* idx, const double* vals,
                                                        size_t n) {
    // An exact stream's sorted record is used where it is; anything else is prepared into
    // `scratch_` (measured: copying the indices there costs less than reading them again
    // from the caller's array while encoding).
    if (s.exact && n <= kMaxRecordNnz) {
        bool ok = n == 0 || idx[0] >= 0;
        for (size_t i = 1; i < n; ++i) ok &= idx[i] > idx[i - 1];
        if (ok) return {idx, reinterpret_cast<const uint64_t*>(vals)};
    }
    prepare_locked(s, sid, idx, vals, n, scratch_, true);
    return {scratch_.indices.data(), scratch_.values.data()};
}

bool LoggerCore::record_acceptable(const Stream& s, const int64_t* idx, const double* vals,
                                   size_t n) {
    if (n > kMaxRecordNnz) return false;
    if (n == 0) return true;
    // Indices: non-negative and strictly increasing (so unique).
    bool ok = idx[0] >= 0;
    for (size_t i = 1; i < n; ++i) ok &= idx[i] > idx[i - 1];
    if (!ok || s.exact) return ok;
    // Values: every |v| / value_scale finite and below 2^63 (NaN fails the comparison), which
    // is exactly what quantise() accepts, since dividing by a positive scale keeps the order.
    double most = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const double a = std::fabs(vals[i]);
        most = a > most || a != a ? a : most;
    }
    return most / s.value_scale < 9223372036854775808.0;
}

void LoggerCore::encode_locked(Stream& s, uint32_t sid, int64_t tick, const int64_t* idx,
                               const uint64_t* vals, size_t n) {
    if (!block_.empty() &&
        block_.raw_bound_after(n, !block_.has_section(s.section_gen)) > block_target_)
        seal_locked(false);
    Section& sec = block_.section_for(sid, s.section, s.section_gen);
    const size_t added = sec.encode(tick, idx, vals, n, s.exact);
    block_.added(added, n);
    ++records_;
    nonzeros_ += n;
    raw_bytes_ += added;
    const double epoch = double(tick) * s.epoch_scale;
    StreamCounters& c = s.counters;
    if (c.records == 0 || epoch < c.min_epoch) c.min_epoch = epoch;
    if (c.records == 0 || epoch > c.max_epoch) c.max_epoch = epoch;
    ++c.records;
    if (block_.raw_bound() >= block_target_) seal_locked(false);
}

void LoggerCore::seal_locked(bool from_writer) {
    if (block_.empty()) return;
    QueueItem item;
    item.kind = QueueItem::Kind::Block;
    item.block = block_.seal();
    item.bytes = item.block.bytes;
    if (parking_) {  // a large record_many batch: held back until the batch is accepted
        parking_->push_back(std::move(item));
        return;
    }
    push_block_locked(std::move(item), from_writer);
}

void LoggerCore::push_block_locked(QueueItem&& item, bool from_writer) {
    item.retired.swap(retire_after_block_);  // forgotten by the writer after this block
    hand_over_registrations_locked();        // the block's streams are described before it
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
    check_fork();
    std::lock_guard<std::mutex> lk(encode_mu_);
    throw_if_unusable();
    Stream& s = stream_locked(sid);
    const int64_t tick = tick_locked(s, sid, epoch);
    const PreparedView v = prepare_view_locked(s, sid, idx, vals, n);
    encode_locked(s, sid, tick, v.idx, v.vals, n);
}

void LoggerCore::record_tick(uint32_t sid, int64_t tick, const int64_t* idx, const double* vals,
                             size_t n) {
    check_fork();
    std::lock_guard<std::mutex> lk(encode_mu_);
    throw_if_unusable();
    Stream& s = stream_locked(sid);
    const PreparedView v = prepare_view_locked(s, sid, idx, vals, n);
    encode_locked(s, sid, tick, v.idx, v.vals, n);
}

void LoggerCore::record_many(const uint32_t* sids, size_t n_sids, const double* epochs,
                             size_t n_records, const int64_t* offsets, const int64_t* idx,
                             const double* vals) {
    check_fork();
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
    std::lock_guard<std::mutex> lk(encode_mu_);
    throw_if_unusable();
    if (bulk_ticks_.size() < n_records) bulk_ticks_.resize(n_records);
    int64_t* ticks = bulk_ticks_.data();
    auto batch_error = [](const InvalidInput& e, size_t k) {
        return InvalidInput(std::string(e.what()) + " (record " + std::to_string(k) +
                            " of the batch; nothing of the batch was recorded)");
    };
    // Streams and epochs first: they take no reading of the (large) value arrays.
    for (size_t k = 0; k < n_records; ++k) {
        const uint32_t sid = n_sids == 1 ? sids[0] : sids[k];
        try {
            ticks[k] = tick_locked(stream_locked(sid), sid, epochs[k]);
        } catch (const InvalidInput& e) {
            throw batch_error(e, k);
        }
    }
    const size_t total_nnz = n_records ? size_t(offsets[n_records]) : 0;
    if (total_nnz * 2 + n_records * 3 < block_target_ / 2) {
        // A small batch: check every record (branch-free for the usual one), then prepare and
        // encode. The batch stays in cache between the two passes.
        for (size_t k = 0; k < n_records; ++k) {
            const uint32_t sid = n_sids == 1 ? sids[0] : sids[k];
            Stream& s = *streams_.find(sid);
            const size_t a = size_t(offsets[k]), n = size_t(offsets[k + 1] - offsets[k]);
            try {
                if (!record_acceptable(s, idx + a, vals + a, n))
                    prepare_locked(s, sid, idx + a, vals + a, n, scratch_, true);
            } catch (const InvalidInput& e) {
                throw batch_error(e, k);
            }
        }
        for (size_t k = 0; k < n_records; ++k) {
            const uint32_t sid = n_sids == 1 ? sids[0] : sids[k];
            Stream& s = *streams_.find(sid);
            const size_t a = size_t(offsets[k]), n = size_t(offsets[k + 1] - offsets[k]);
            const PreparedView v = prepare_view_locked(s, sid, idx + a, vals + a, n);
            encode_locked(s, sid, ticks[k], v.idx, v.vals, n);
        }
    } else {
        // A large batch is read once: encoded straight into blocks of its own, which are held
        // back ("parked") until the whole batch has been accepted; a bad record throws them away
        // and restores what the batch changed. The open block goes out first, so that no record
        // from before the batch is in a block that may be thrown away.
        seal_locked(false);
        std::vector<QueueItem> parked;
        std::vector<std::pair<Stream*, StreamCounters>> touched;
        const uint64_t records0 = records_, nonzeros0 = nonzeros_, raw0 = raw_bytes_;
        const uint64_t mark = ++batch_mark_;
        parking_ = &parked;
        size_t k = 0;
        try {
            for (; k < n_records; ++k) {
                const uint32_t sid = n_sids == 1 ? sids[0] : sids[k];
                Stream& s = *streams_.find(sid);
                const size_t a = size_t(offsets[k]), n = size_t(offsets[k + 1] - offsets[k]);
                const PreparedView v = prepare_view_locked(s, sid, idx + a, vals + a, n);
                if (s.batch_mark != mark) {
                    s.batch_mark = mark;
                    touched.emplace_back(&s, s.counters);
                }
                encode_locked(s, sid, ticks[k], v.idx, v.vals, n);
            }
        } catch (...) {
            parking_ = nullptr;
            for (auto& item : parked) pool_.give_back(item.block.sections);
            block_.discard();
            for (auto& t : touched) t.first->counters = t.second;
            records_ = records0;
            nonzeros_ = nonzeros0;
            raw_bytes_ = raw0;
            try {
                throw;
            } catch (const InvalidInput& e) {
                throw batch_error(e, k);
            }
        }
        parking_ = nullptr;
        for (auto& item : parked) push_block_locked(std::move(item), false);
    }
    if (bulk_ticks_.size() > (size_t(1) << 20)) std::vector<int64_t>().swap(bulk_ticks_);
}

void LoggerCore::check_stream(uint32_t sid) {
    check_fork();
    std::lock_guard<std::mutex> lk(encode_mu_);
    throw_if_unusable();
    stream_locked(sid);
}

void LoggerCore::flush() {
    check_fork();
    uint64_t ticket;
    {
        std::lock_guard<std::mutex> lk(encode_mu_);
        throw_if_unusable();
        seal_locked(false);
        hand_over_registrations_locked();
        QueueItem sync;
        sync.kind = QueueItem::Kind::Sync;
        double waited = 0;
        ticket = queue_.push(std::move(sync), true, waited);
    }
    if (ticket) queue_.wait_done(ticket);
    std::lock_guard<std::mutex> lk(encode_mu_);
    if (failed_.load()) throw_if_unusable();
}

void LoggerCore::close() {
    check_fork();
    std::lock_guard<std::mutex> close_lk(close_mu_);
    if (closed_.load()) return;
    {
        std::lock_guard<std::mutex> lk(encode_mu_);
        if (!failed_.load()) {
            try {
                seal_locked(false);
                hand_over_registrations_locked();
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
    check_fork();
    LoggerStats st;
    {
        std::lock_guard<std::mutex> lk(encode_mu_);
        st.records = records_;
        st.nonzeros = nonzeros_;
        st.raw_bytes = raw_bytes_;
        st.stalls = stalls_;
        st.stall_seconds = stall_seconds_;
        st.streams = streams_.live();
    }
    st.compressed_bytes = written_bytes_.load();
    st.blocks = written_blocks_.load();
    st.segments = written_segments_.load();
    st.queue_peak_bytes = queue_.peak_bytes();
    return st;
}

std::vector<std::pair<uint32_t, StreamCounters>> LoggerCore::stream_counters(
    const std::vector<uint32_t>* ids) {
    check_fork();
    std::lock_guard<std::mutex> lk(encode_mu_);
    std::vector<std::pair<uint32_t, StreamCounters>> out;
    if (ids) {
        out.reserve(ids->size());
        for (uint32_t sid : *ids) out.emplace_back(sid, stream_locked(sid).counters);
    } else {
        out.reserve(streams_.live());
        streams_.for_each([&](uint32_t sid, const Stream& s) { out.emplace_back(sid, s.counters); });
    }
    return out;
}

std::string LoggerCore::stream_name(uint32_t sid) {
    check_fork();
    std::lock_guard<std::mutex> lk(encode_mu_);
    return stream_locked(sid).name;
}

double LoggerCore::stream_epoch_scale(uint32_t sid) {
    check_fork();
    std::lock_guard<std::mutex> lk(encode_mu_);
    return stream_locked(sid).epoch_scale;
}

}  // namespace ddl
