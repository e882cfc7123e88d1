// Periodic streams (SPEC section 2): reduce many updates to one record per period boundary.
// "state" emits, at every boundary k*P, the last vector recorded at or before it; "accumulator"
// emits, at the start k*P of every period, the sum of the vectors recorded in [k*P, (k+1)*P).
// Time is handled in integer ticks of the stream's epoch_scale, so boundaries never drift.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "logger_core.hpp"

namespace ddl {

class PeriodicAggregator {
public:
    enum class Kind { State, Accumulator };

    // periodicity is in epoch units; it must be a whole number (>= 1) of epoch_scale ticks.
    PeriodicAggregator(std::shared_ptr<LoggerCore> core, uint32_t sid, double periodicity,
                       Kind kind);

    void record(double epoch, const int64_t* idx, const double* vals, size_t n);
    void close(double final_epoch);
    bool closed() const { return closed_; }
    uint32_t stream_id() const { return sid_; }
    int64_t period_ticks() const { return period_; }
    const LoggerCore& core() const { return *core_; }

private:
    void emit(int64_t tick, const std::vector<int64_t>& idx, const std::vector<double>& vals);
    void emit_state_before(int64_t tick, bool inclusive);
    void emit_accumulator_before(int64_t period);
    void add_to_accumulator(const PreparedRecord& rec);
    [[noreturn]] void invalid(const std::string& what);

    std::shared_ptr<LoggerCore> core_;
    uint32_t sid_;
    int64_t period_;  // ticks
    Kind kind_;
    std::mutex mu_;
    bool closed_ = false;
    bool started_ = false;
    int64_t last_tick_ = 0;
    int64_t next_k_ = 0;  // next boundary (state) or next period to emit (accumulator)
    int64_t current_period_ = 0;
    std::vector<int64_t> idx_;
    std::vector<double> vals_;
    std::vector<int64_t> merge_idx_;
    std::vector<double> merge_vals_;
    PreparedRecord prep_;
    const std::vector<int64_t> empty_idx_;
    const std::vector<double> empty_vals_;
};

}  // namespace ddl
