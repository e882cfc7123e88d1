// LoggerCore: the native half of DataLogger. Recording threads validate records and encode them
// straight into the per-stream sections of the open block under `encode_mu_` (the caller has
// released the GIL); sealed blocks, registrations and retirements go through the BlockQueue to one
// writer thread that compresses and appends them (SegmentWriter). A writer failure is stored and
// rethrown to the next caller; nothing here touches Python. The settings come from the caller
// (disco_data_logger/_defaults.py holds their defaults and checks them): none are defaulted here.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "block_encoder.hpp"
#include "block_queue.hpp"
#include "codec.hpp"
#include "frames.hpp"
#include "segment_writer.hpp"

namespace ddl {

struct LoggerOptions {
    std::string dir;
    size_t ring_bytes;
    size_t block_bytes;
    uint64_t rotate_bytes;
    int zstd_level;
    double flush_interval;
};

struct LoggerStats {
    uint64_t records = 0;
    uint64_t nonzeros = 0;
    uint64_t raw_bytes = 0;
    uint64_t compressed_bytes = 0;
    uint64_t blocks = 0;
    uint64_t segments = 0;
    uint64_t stalls = 0;
    double stall_seconds = 0.0;
    uint64_t queue_peak_bytes = 0;
    uint64_t streams = 0;
};

struct StreamCounters {
    uint64_t records = 0;
    double min_epoch = 0.0;
    double max_epoch = 0.0;
};

// Sorted, validated input of one record, ready to encode.
struct PreparedRecord {
    std::vector<int64_t> indices;
    std::vector<uint64_t> values;  // q or float64 bits
    std::vector<size_t> order;     // scratch for sorting
};

class LoggerCore {
public:
    explicit LoggerCore(const LoggerOptions& opts);
    ~LoggerCore();
    LoggerCore(const LoggerCore&) = delete;
    LoggerCore& operator=(const LoggerCore&) = delete;

    // `reg.stream_id` is assigned here and returned. `name` is only used in error messages.
    uint32_t register_stream(const std::string& name, Registration reg);
    // Releases everything the logger keeps per stream; ids already retired or never used are
    // ignored. Recording into a retired stream raises UnknownStream; ids are never reused.
    void retire_streams(const std::vector<uint32_t>& sids);

    void record(uint32_t sid, double epoch, const int64_t* idx, const double* vals, size_t n);
    // Bulk: record k is [offsets[k], offsets[k+1]); sids has one entry per record or exactly one.
    // All records are validated before any is encoded.
    void record_many(const uint32_t* sids, size_t n_sids, const double* epochs, size_t n_records,
                     const int64_t* offsets, const int64_t* idx, const double* vals);
    // For periodic streams: `tick` is already quantised, indices sorted and unique.
    void record_tick(uint32_t sid, int64_t tick, const int64_t* idx, const double* vals, size_t n);

    void flush();
    void close();
    bool closed() const { return closed_.load(); }
    // True in a process forked from the one that created this logger (nothing may be touched).
    bool forked() const;
    // Throws ForkedError in such a process.
    void check_fork() const;

    LoggerStats stats();
    // (id, counters) of every live stream in id order, or of `ids` in that order.
    std::vector<std::pair<uint32_t, StreamCounters>> stream_counters(
        const std::vector<uint32_t>* ids = nullptr);
    std::string stream_name(uint32_t sid);
    double stream_epoch_scale(uint32_t sid);
    // Throws UnknownStream / ClosedError / WriterFailure, as record() would.
    void check_stream(uint32_t sid);

    // Validates and sorts one record for stream `sid` into `out` (used by periodic streams too).
    void prepare(uint32_t sid, const int64_t* idx, const double* vals, size_t n,
                 PreparedRecord& out, bool quantise_values);
    int64_t epoch_to_tick(uint32_t sid, double epoch);

private:
    struct Stream {
        std::string name;
        double epoch_scale;
        double value_scale;
        bool exact;
        StreamCounters counters;
        Section* section = nullptr;  // its section in the open block, while section_gen matches
        uint64_t section_gen = 0;
    };

    // Live streams by id. Ids are handed out in order and retired in roughly the same order, so
    // the table is a window [base_, next_) over the ids: memory follows the live streams.
    class StreamTable {
    public:
        Stream* find(uint32_t sid) const {
            if (sid < base_ || sid >= next_) return nullptr;
            return slots_[head_ + (sid - base_)].get();
        }
        uint32_t next_id() const { return next_; }
        size_t live() const { return live_; }
        uint32_t add(std::unique_ptr<Stream> s);
        void retire(uint32_t sid);
        template <class F>
        void for_each(F f) const {
            for (size_t i = head_; i < slots_.size(); ++i)
                if (slots_[i]) f(uint32_t(base_ + (i - head_)), *slots_[i]);
        }

    private:
        std::vector<std::unique_ptr<Stream>> slots_;
        size_t head_ = 0;    // slots_[head_] holds stream base_
        uint32_t base_ = 0;  // lowest id that may be live
        uint32_t next_ = 0;  // next id to hand out
        size_t live_ = 0;
    };

    void writer_main();
    void throw_if_unusable();
    void encode_locked(Stream& s, uint32_t sid, int64_t tick, const int64_t* idx,
                       const uint64_t* vals, size_t n);
    void seal_locked(bool from_writer);
    void hand_over_registrations_locked();
    [[noreturn]] void invalid(uint32_t sid, const std::string& what);
    int64_t tick_locked(Stream& s, uint32_t sid, double epoch);
    void prepare_locked(Stream& s, uint32_t sid, const int64_t* idx, const double* vals,
                        size_t n, PreparedRecord& out, bool quantise_values);
    Stream& stream_locked(uint32_t sid);
    void set_failure(const std::string& msg, int err);

    const LoggerOptions opts_;
    const uint64_t fork_generation_;
    const size_t block_target_;  // raw bytes of a block (FORMAT.md section 6)
    BlockQueue queue_;
    SectionPool pool_;
    std::unique_ptr<SegmentWriter> writer_;
    std::thread thread_;

    std::mutex encode_mu_;  // guards everything below up to `scratch_`
    StreamTable streams_;
    OpenBlock block_;
    std::vector<uint32_t> retire_after_block_;  // released once the open block is written
    // Registered since the last hand-over to the writer: handed over in one item before the next
    // block, flush or retirement (not one wake-up of the writer per stream).
    std::vector<Registration> new_registrations_;
    size_t new_registration_bytes_ = 0;
    PreparedRecord scratch_;
    // record_many's ticks; grows to the largest batch, released when that was huge.
    std::vector<int64_t> bulk_ticks_;
    uint64_t records_ = 0;
    uint64_t nonzeros_ = 0;
    uint64_t raw_bytes_ = 0;
    uint64_t stalls_ = 0;
    double stall_seconds_ = 0.0;

    std::mutex close_mu_;  // serialises close()
    std::atomic<bool> closed_{false};
    std::atomic<bool> failed_{false};
    std::mutex failure_mu_;
    std::string failure_;
    int failure_errno_ = 0;
    bool failure_reported_ = false;

    std::atomic<uint64_t> written_blocks_{0};
    std::atomic<uint64_t> written_bytes_{0};
    std::atomic<uint64_t> written_segments_{0};
};

}  // namespace ddl
