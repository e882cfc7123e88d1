// Periodic streams: reduce many updates to one record per period boundary.
// "state" emits, at every boundary k*P, the last vector recorded at or before it; "accumulator"
// emits, at the start k*P of every period, the sum of the vectors recorded in [k*P, (k+1)*P).
//
// An update belongs to the period that contains its epoch as given (not as rounded to ticks).
// Boundaries are robust to floating-point representation error: the quotient epoch / P is taken as
// the whole number k when it lies within kBoundarySnap * max(1, |k|) of it, so an update at 0.3
// with P = 0.1 is on boundary 3 although 0.3 / 0.1 == 2.9999999999999996 in float64.
// Emitted epochs are exact: boundary k is written as tick k * (P / epoch_scale), a whole number.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "logger_core.hpp"

namespace ddl {

// Relative tolerance of the boundary snap: ~4,500 units in the last place of the quotient, far
// above the error of a decimal literal or of a few arithmetic steps (a few units), far below a
// time difference a model means. disco_data_logger/periodic.py documents the same number.
constexpr double kBoundarySnap = 1e-12;

// The whole number x stands for, when x is within the snap tolerance of one; else false.
bool snap_to_whole(double x, double& whole);

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
    // Index of the period holding `epoch` (floor) or of the first boundary at or after it (ceil),
    // both with the snap; validates the epoch as a record would.
    int64_t period_index(double epoch, bool ceil);
    void emit(int64_t k, const std::vector<int64_t>& idx, const std::vector<double>& vals);
    void emit_state_through(int64_t last_k);
    void emit_accumulator_before(int64_t period);
    void add_to_accumulator(const PreparedRecord& rec);
    [[noreturn]] void invalid(const std::string& what);

    std::shared_ptr<LoggerCore> core_;
    uint32_t sid_;
    double periodicity_;  // epoch units, as given
    int64_t period_;      // ticks
    Kind kind_;
    std::mutex mu_;
    bool closed_ = false;
    bool started_ = false;
    double last_epoch_ = 0.0;
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
