// LoggerCore: the native half of DataLogger. Recording threads validate and encode records into
// the current block under `encode_mu_` (the caller has released the GIL); sealed blocks go through
// the BlockQueue to one writer thread that compresses and appends them (SegmentWriter). A writer
// failure is stored and rethrown to the next caller; nothing here touches Python.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "block_queue.hpp"
#include "codec.hpp"
#include "segment_writer.hpp"

namespace ddl {

struct LoggerOptions {
    std::string dir;
    size_t ring_bytes = 64u << 20;
    size_t block_bytes = 1u << 20;
    uint64_t rotate_bytes = 256u << 20;
    int zstd_level = 3;
    double flush_interval = 1.0;
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
    explicit LoggerCore(LoggerOptions opts);
    ~LoggerCore();
    LoggerCore(const LoggerCore&) = delete;
    LoggerCore& operator=(const LoggerCore&) = delete;

    // value_scale is ignored when exact. `name` is only used in error messages.
    uint32_t register_stream(const std::string& name, double epoch_scale, double value_scale,
                             bool exact, bool periodic, const std::string& json);

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

    LoggerStats stats();
    // All streams, or only `ids` (in that order; UnknownStream for an id never registered).
    std::vector<StreamCounters> stream_counters(const std::vector<uint32_t>* ids = nullptr);
    size_t stream_count();
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
        Predecessor pred;
        StreamCounters counters;
    };

    void writer_main();
    void throw_if_unusable();
    void encode_locked(Stream& s, uint32_t sid, int64_t tick, const int64_t* idx,
                       const uint64_t* vals, size_t n);
    void seal_locked(bool from_writer);
    [[noreturn]] void invalid(uint32_t sid, const std::string& what);
    int64_t tick_locked(uint32_t sid, double epoch);
    void prepare_locked(uint32_t sid, const int64_t* idx, const double* vals, size_t n,
                        PreparedRecord& out, bool quantise_values);
    Stream& stream_locked(uint32_t sid);
    void set_failure(const std::string& msg, int err);

    LoggerOptions opts_;
    size_t block_target_;
    BlockQueue queue_;
    std::unique_ptr<SegmentWriter> writer_;
    std::thread thread_;

    std::mutex encode_mu_;  // guards everything below up to `scratch_`
    std::vector<Stream> streams_;
    Bytes block_;
    uint32_t block_records_ = 0;
    uint64_t generation_ = 1;
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
