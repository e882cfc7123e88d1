#include "periodic.hpp"

#include <cmath>
#include <sstream>

#include "errors.hpp"

namespace ddl {

namespace {
int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
}
int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }
}  // namespace

PeriodicAggregator::PeriodicAggregator(std::shared_ptr<LoggerCore> core, uint32_t sid,
                                       double periodicity, Kind kind)
    : core_(std::move(core)), sid_(sid), kind_(kind) {
    const double scale = core_->stream_epoch_scale(sid);
    if (!(std::isfinite(periodicity) && periodicity > 0)) {
        std::ostringstream os;
        os << "periodicity must be a positive finite number (got " << periodicity << ")";
        invalid(os.str());
    }
    int64_t ticks = 0;
    if (!quantise(periodicity, scale, ticks) || ticks < 1) {
        std::ostringstream os;
        os << "periodicity " << periodicity << " must be at least one epoch_scale tick (" << scale
           << ") and fit in int64 ticks";
        invalid(os.str());
    }
    period_ = ticks;
}

void PeriodicAggregator::invalid(const std::string& what) {
    throw InvalidInput("stream " + std::to_string(sid_) + " (" + core_->stream_name(sid_) +
                       "): " + what);
}

void PeriodicAggregator::emit(int64_t tick, const std::vector<int64_t>& idx,
                              const std::vector<double>& vals) {
    core_->record_tick(sid_, tick, idx.data(), vals.data(), idx.size());
}

void PeriodicAggregator::emit_state_before(int64_t tick, bool inclusive) {
    while (true) {
        const int64_t boundary = next_k_ * period_;
        if (boundary > tick || (!inclusive && boundary == tick)) break;
        emit(boundary, idx_, vals_);
        ++next_k_;
    }
}

void PeriodicAggregator::emit_accumulator_before(int64_t period) {
    while (next_k_ < period) {
        if (started_ && next_k_ == current_period_) {
            emit(next_k_ * period_, idx_, vals_);
            idx_.clear();
            vals_.clear();
        } else {
            emit(next_k_ * period_, empty_idx_, empty_vals_);
        }
        ++next_k_;
    }
}

// Sorted union of the current sum and a sorted record; entries that cancel to 0 stay present.
void PeriodicAggregator::add_to_accumulator(const PreparedRecord& rec) {
    const size_t n = rec.indices.size();
    merge_idx_.clear();
    merge_vals_.clear();
    merge_idx_.reserve(idx_.size() + n);
    merge_vals_.reserve(idx_.size() + n);
    size_t a = 0, b = 0;
    while (a < idx_.size() || b < n) {
        if (b == n || (a < idx_.size() && idx_[a] < rec.indices[b])) {
            merge_idx_.push_back(idx_[a]);
            merge_vals_.push_back(vals_[a++]);
        } else if (a == idx_.size() || rec.indices[b] < idx_[a]) {
            merge_idx_.push_back(rec.indices[b]);
            merge_vals_.push_back(bits_f64(rec.values[b++]));
        } else {
            merge_idx_.push_back(idx_[a]);
            merge_vals_.push_back(vals_[a++] + bits_f64(rec.values[b++]));
        }
    }
    idx_.swap(merge_idx_);
    vals_.swap(merge_vals_);
}

void PeriodicAggregator::record(double epoch, const int64_t* idx, const double* vals, size_t n) {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) throw ClosedError("periodic stream " + std::to_string(sid_) + " is closed");
    core_->check_stream(sid_);
    const int64_t tick = core_->epoch_to_tick(sid_, epoch);
    // Validated and sorted, values kept as float64 bits: sums are formed before quantisation.
    core_->prepare(sid_, idx, vals, n, prep_, false);
    if (started_ && tick < last_tick_) {
        std::ostringstream os;
        os << "epoch " << epoch << " is earlier than the previous update ("
           << double(last_tick_) * core_->stream_epoch_scale(sid_)
           << "); periodic streams need non-decreasing epochs";
        invalid(os.str());
    }
    if (kind_ == Kind::State) {
        if (started_) {
            emit_state_before(tick, false);
        } else {
            next_k_ = ceil_div(tick, period_);  // no boundary before the first update is emitted
        }
        idx_.assign(prep_.indices.begin(), prep_.indices.end());
        vals_.resize(n);
        for (size_t i = 0; i < n; ++i) vals_[i] = bits_f64(prep_.values[i]);
    } else {
        const int64_t period = floor_div(tick, period_);
        if (!started_) {
            next_k_ = period < 0 ? period : 0;
            current_period_ = period;
            idx_.clear();
            vals_.clear();
        }
        emit_accumulator_before(period);
        if (!started_ || current_period_ != period) {
            current_period_ = period;
            idx_.clear();
            vals_.clear();
        }
        add_to_accumulator(prep_);
    }
    started_ = true;
    last_tick_ = tick;
}

void PeriodicAggregator::close(double final_epoch) {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    core_->check_stream(sid_);
    const int64_t tick = core_->epoch_to_tick(sid_, final_epoch);
    if (kind_ == Kind::State) {
        if (started_) emit_state_before(tick, true);
    } else {
        emit_accumulator_before(floor_div(tick, period_));
    }
    closed_ = true;
    idx_.clear();
    idx_.shrink_to_fit();
    vals_.clear();
    vals_.shrink_to_fit();
}

}  // namespace ddl
