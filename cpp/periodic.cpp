#include "periodic.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "errors.hpp"

namespace ddl {

bool snap_to_whole(double x, double& whole) {
    if (!std::isfinite(x)) return false;
    const double n = std::nearbyint(x);
    if (std::fabs(x - n) > kBoundarySnap * std::max(1.0, std::fabs(n))) return false;
    whole = n;
    return true;
}

PeriodicAggregator::PeriodicAggregator(std::shared_ptr<LoggerCore> core, uint32_t sid,
                                       double periodicity, Kind kind)
    : core_(std::move(core)), sid_(sid), periodicity_(periodicity), kind_(kind) {
    const double scale = core_->stream_epoch_scale(sid);
    if (!(std::isfinite(periodicity) && periodicity > 0)) {
        std::ostringstream os;
        os << "periodicity must be a positive finite number (got " << periodicity << ")";
        invalid(os.str());
    }
    const double ratio = periodicity / scale;
    double ticks = 0;
    if (!snap_to_whole(ratio, ticks) || ticks < 1 || ticks >= 4611686018427387904.0) {
        std::ostringstream os;
        os.precision(17);
        if (ratio < 1)
            os << "periodicity " << periodicity << " is shorter than one epoch_scale tick ("
               << scale << ")";
        else
            os << "periodicity " << periodicity << " is not a whole number of epoch_scale ticks ("
               << scale << "): their ratio is " << ratio
               << "; choose an epoch_scale that divides the period";
        invalid(os.str());
    }
    period_ = int64_t(ticks);
}

void PeriodicAggregator::invalid(const std::string& what) {
    throw InvalidInput("stream " + std::to_string(sid_) + " (" + core_->stream_name(sid_) +
                       "): " + what);
}

int64_t PeriodicAggregator::period_index(double epoch, bool ceil) {
    core_->epoch_to_tick(sid_, epoch);  // refuses a non-finite epoch or one beyond int64 ticks
    const double q = epoch / periodicity_;
    double k = 0;
    if (!snap_to_whole(q, k)) k = ceil ? std::ceil(q) : std::floor(q);
    // Every boundary up to k + 1 must be a representable tick.
    const double limit = double(std::numeric_limits<int64_t>::max() / period_ - 1);
    if (!(std::fabs(k) < limit)) {
        std::ostringstream os;
        os << "epoch " << epoch << " is beyond the last period boundary that fits int64 ticks";
        invalid(os.str());
    }
    return int64_t(k);
}

void PeriodicAggregator::emit(int64_t k, const std::vector<int64_t>& idx,
                              const std::vector<double>& vals) {
    core_->record_tick(sid_, k * period_, idx.data(), vals.data(), idx.size());
}

void PeriodicAggregator::emit_state_through(int64_t last_k) {
    for (; next_k_ <= last_k; ++next_k_) emit(next_k_, idx_, vals_);
}

void PeriodicAggregator::emit_accumulator_before(int64_t period) {
    while (next_k_ < period) {
        if (started_ && next_k_ == current_period_) {
            emit(next_k_, idx_, vals_);
            idx_.clear();
            vals_.clear();
        } else {
            emit(next_k_, empty_idx_, empty_vals_);
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
    // state: the first boundary at or after the update; accumulator: the period holding it.
    const int64_t k = period_index(epoch, kind_ == Kind::State);
    // Validated and sorted, values kept as float64 bits: sums are formed before quantisation.
    core_->prepare(sid_, idx, vals, n, prep_, false);
    if (started_ && epoch < last_epoch_) {
        std::ostringstream os;
        os.precision(17);
        os << "epoch " << epoch << " is earlier than the previous update (" << last_epoch_
           << "); periodic streams need non-decreasing epochs";
        invalid(os.str());
    }
    if (kind_ == Kind::State) {
        if (started_) {
            emit_state_through(k - 1);  // boundaries strictly before this update keep the old state
        } else {
            next_k_ = k;  // no boundary before the first update is emitted
        }
        idx_.assign(prep_.indices.begin(), prep_.indices.end());
        vals_.resize(n);
        for (size_t i = 0; i < n; ++i) vals_[i] = bits_f64(prep_.values[i]);
    } else {
        if (!started_) {
            next_k_ = k < 0 ? k : 0;
            current_period_ = k;
            idx_.clear();
            vals_.clear();
        }
        emit_accumulator_before(k);
        if (!started_ || current_period_ != k) {
            current_period_ = k;
            idx_.clear();
            vals_.clear();
        }
        add_to_accumulator(prep_);
    }
    started_ = true;
    last_epoch_ = epoch;
}

void PeriodicAggregator::close(double final_epoch) {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    core_->check_stream(sid_);
    const int64_t last = period_index(final_epoch, false);
    if (kind_ == Kind::State) {
        if (started_) emit_state_through(last);  // every boundary at or before final_epoch
    } else {
        emit_accumulator_before(last);  // every period that ends at or before final_epoch
    }
    closed_ = true;
    idx_.clear();
    idx_.shrink_to_fit();
    vals_.clear();
    vals_.shrink_to_fit();
}

}  // namespace ddl
