// The bounded hand-off between recording threads (producers) and the one writer thread of a
// logger: a FIFO of sealed blocks, registrations, retirements and sync marks whose total size is
// capped at the ring budget. A full queue blocks the producer on a condition variable (no
// spinning) and the wait is counted; the writer's wake-ups are driven by the same lock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "block_encoder.hpp"
#include "frames.hpp"

namespace ddl {

struct QueueItem {
    // Block: `block`, then release `retired`. Registrations: new streams, written before the
    // next block. Retire: release `retired`. Sync: nothing to write; done once everything before
    // it is (flush()).
    enum class Kind : uint8_t { Block, Registrations, Retire, Sync };
    Kind kind = Kind::Sync;
    SealedBlock block;
    std::vector<Registration> registrations;
    std::vector<uint32_t> retired;
    size_t bytes = 0;     // counted against the ring budget
    uint64_t ticket = 0;  // position in the queue's total order, assigned by push()
};

class BlockQueue {
public:
    using Clock = std::chrono::steady_clock;
    enum class PopResult { Item, Timeout, Finished };

    explicit BlockQueue(size_t capacity_bytes) : capacity_(capacity_bytes) {}

    // Appends an item; waits while the queue holds more than its budget, unless `bypass` (the
    // writer thread itself, or a registration, must never wait on the consumer). An item larger
    // than the whole budget is admitted once the queue is empty. Returns the item's ticket, or 0
    // when the queue has failed (the item is dropped; the caller reports the failure).
    uint64_t push(QueueItem&& item, bool bypass, double& waited_seconds) {
        std::unique_lock<std::mutex> lk(mu_);
        const size_t size = item.bytes;
        if (!bypass && !failed_ && queued_bytes_ > 0 && queued_bytes_ + size > capacity_) {
            const auto t0 = Clock::now();
            space_cv_.wait(lk, [&] {
                return failed_ || queued_bytes_ == 0 || queued_bytes_ + size <= capacity_;
            });
            waited_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        }
        if (failed_) return 0;
        item.ticket = ++pushed_;
        queued_bytes_ += size;
        if (queued_bytes_ > peak_bytes_) peak_bytes_ = queued_bytes_;
        items_.push_back(std::move(item));
        item_cv_.notify_one();
        return pushed_;
    }

    // Writer side: the next item, or Timeout at `deadline`, or Finished once finish() was called
    // and everything queued before it has been handed out.
    PopResult pop(QueueItem& out, Clock::time_point deadline) {
        std::unique_lock<std::mutex> lk(mu_);
        if (!item_cv_.wait_until(lk, deadline, [&] { return !items_.empty() || finishing_; }))
            return PopResult::Timeout;
        if (items_.empty()) return PopResult::Finished;
        out = std::move(items_.front());
        items_.pop_front();
        queued_bytes_ -= out.bytes;
        space_cv_.notify_all();
        return PopResult::Item;
    }

    // Writer side: the item with this ticket (and all before it) has been written to the OS.
    void mark_done(uint64_t ticket) {
        std::lock_guard<std::mutex> lk(mu_);
        done_ = ticket;
        done_cv_.notify_all();
    }

    // Producer side (flush): waits until `ticket` is written or the queue failed.
    void wait_done(uint64_t ticket) {
        std::unique_lock<std::mutex> lk(mu_);
        done_cv_.wait(lk, [&] { return failed_ || done_ >= ticket; });
    }

    uint64_t last_ticket() {
        std::lock_guard<std::mutex> lk(mu_);
        return pushed_;
    }

    void finish() {
        std::lock_guard<std::mutex> lk(mu_);
        finishing_ = true;
        item_cv_.notify_all();
    }

    // The writer failed: drop what is queued and release every waiter.
    void fail() {
        std::lock_guard<std::mutex> lk(mu_);
        failed_ = true;
        items_.clear();
        queued_bytes_ = 0;
        space_cv_.notify_all();
        done_cv_.notify_all();
        item_cv_.notify_all();
    }

    size_t queued_bytes() {
        std::lock_guard<std::mutex> lk(mu_);
        return queued_bytes_;
    }
    size_t peak_bytes() {
        std::lock_guard<std::mutex> lk(mu_);
        return peak_bytes_;
    }

private:
    std::mutex mu_;
    std::condition_variable item_cv_, space_cv_, done_cv_;
    std::deque<QueueItem> items_;
    size_t capacity_;
    size_t queued_bytes_ = 0;
    size_t peak_bytes_ = 0;
    uint64_t pushed_ = 0;
    uint64_t done_ = 0;
    bool finishing_ = false;
    bool failed_ = false;
};

}  // namespace ddl
