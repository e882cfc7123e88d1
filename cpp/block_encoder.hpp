// The open block of a logger (docs/FORMAT.md section 5): one Section per stream that has records in
// it, each encoded column by column (ticks, counts, indices, values) as records arrive, so that
// sealing a block is handing its sections to the writer thread: no second encoding pass. Sections
// come from and return to a SectionPool, so a steady logger allocates nothing per record or block.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "codec.hpp"

namespace ddl {

// One stream's records of one block (FORMAT.md section 5.2). Owned by the recording thread while
// the block is open, by the writer thread once it is sealed.
struct Section {
    uint32_t sid = 0;
    uint32_t records = 0;
    uint64_t nnz = 0;
    Bytes ticks, counts, indices, values;
    // The previous record of this section: its predecessor in the format's sense.
    int64_t last_tick = 0;
    std::vector<int64_t> pred_idx;
    std::vector<uint64_t> pred_vals;  // q, or float64 bits for an exact stream

    size_t bytes() const { return ticks.size() + counts.size() + indices.size() + values.size(); }
    size_t capacity() const {
        return ticks.capacity() + counts.capacity() + indices.capacity() + values.capacity() +
               pred_idx.capacity() * 8 + pred_vals.capacity() * 8;
    }
    void reset(uint32_t stream_id) {
        sid = stream_id;
        records = 0;
        nnz = 0;
        ticks.clear();
        counts.clear();
        indices.clear();
        values.clear();
        pred_idx.clear();
        pred_vals.clear();
    }

    // Appends one record (indices sorted and unique, values quantised or float64 bits) and returns
    // the bytes it added.
    size_t encode(int64_t tick, const int64_t* idx, const uint64_t* vals, size_t n, bool exact) {
        const bool first = records == 0;
        const bool same = !first && pred_idx.size() == n &&
                          (n == 0 || std::memcmp(pred_idx.data(), idx, n * sizeof(int64_t)) == 0);
        size_t added = 0;
        {
            uint8_t* t = ticks.reserve_tail(kMaxVarint);
            uint8_t* e = put_varint(
                t, zigzag(first ? tick : int64_t(uint64_t(tick) - uint64_t(last_tick))));
            ticks.commit_to(e);
            added += size_t(e - t);
            uint8_t* c = counts.reserve_tail(kMaxVarint);
            e = put_varint(c, same ? 0 : uint64_t(n) + 1);
            counts.commit_to(e);
            added += size_t(e - c);
        }
        if (!same && n > 0) {
            uint8_t* const start = indices.reserve_tail(n * kMaxVarint);
            uint8_t* p = put_varint(start, uint64_t(idx[0]));
            for (size_t i = 1; i < n; ++i) p = put_varint(p, uint64_t(idx[i] - idx[i - 1] - 1));
            indices.commit_to(p);
            added += size_t(p - start);
        }
        if (n > 0) {
            if (exact) {
                uint8_t* p = values.reserve_tail(n * 8);
                if (same) {
                    const uint64_t* prev = pred_vals.data();
                    for (size_t i = 0; i < n; ++i) put_u64(p + 8 * i, vals[i] ^ prev[i]);
                } else {
                    std::memcpy(p, vals, n * 8);
                }
                values.commit_to(p + n * 8);
                added += n * 8;
            } else {
                uint8_t* const start = values.reserve_tail(n * kMaxVarint);
                uint8_t* p = start;
                if (same) {
                    const uint64_t* prev = pred_vals.data();
                    for (size_t i = 0; i < n; ++i)
                        p = put_varint(p, zigzag(int64_t(vals[i] - prev[i])));
                } else {
                    for (size_t i = 0; i < n; ++i) p = put_varint(p, zigzag(int64_t(vals[i])));
                }
                values.commit_to(p);
                added += size_t(p - start);
            }
        }
        last_tick = tick;
        if (!same) pred_idx.assign(idx, idx + n);
        pred_vals.assign(vals, vals + n);
        ++records;
        nnz += n;
        return added;
    }
};

using SectionPtr = std::unique_ptr<Section>;

// Worst case of one record with n non-zeros in a section, for the block size cap.
inline size_t record_bound(size_t n) { return 2 * kMaxVarint + n * 2 * kMaxVarint; }
// Worst case of one directory entry (FORMAT.md section 5.1).
constexpr size_t kDirectoryEntryBound = 5 + 5 + 10 + 5;

// Spare sections, shared by the recording threads (take) and the writer thread (give back). The
// pool keeps only what a few blocks need, so a logger whose streams come and go stays flat.
class SectionPool {
public:
    explicit SectionPool(size_t keep_bytes) : keep_bytes_(keep_bytes) {}

    SectionPtr take(uint32_t sid) {
        SectionPtr s;
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (!spare_.empty()) {
                s = std::move(spare_.back());
                spare_.pop_back();
                spare_bytes_ -= s->capacity();
            }
        }
        if (!s) s = std::make_unique<Section>();
        s->reset(sid);
        return s;
    }

    void give_back(std::vector<SectionPtr>& sections) {
        std::lock_guard<std::mutex> lk(mu_);
        for (auto& s : sections) {
            const size_t cap = s->capacity();
            if (spare_.size() < kMaxSpare && spare_bytes_ + cap <= keep_bytes_) {
                spare_bytes_ += cap;
                spare_.push_back(std::move(s));
            }
        }
        sections.clear();  // the ones not kept are freed here
    }

private:
    static constexpr size_t kMaxSpare = 1 << 16;
    std::mutex mu_;
    std::vector<SectionPtr> spare_;
    size_t spare_bytes_ = 0;
    size_t keep_bytes_;
};

// A block ready for the writer: its sections in increasing stream id order.
struct SealedBlock {
    std::vector<SectionPtr> sections;
    uint32_t records = 0;
    uint64_t nnz = 0;
    size_t bytes = 0;  // raw section bytes (the directory comes on top)
};

// The block being filled by the recording threads (used under the logger's encoder lock).
class OpenBlock {
public:
    explicit OpenBlock(SectionPool& pool) : pool_(pool) {}

    bool empty() const { return records_ == 0; }
    // Upper bound of the raw payload size so far (directory included).
    size_t raw_bound() const {
        return bytes_ + kMaxVarint + sections_.size() * kDirectoryEntryBound;
    }
    // Upper bound of the raw size after one more record with n non-zeros of a stream.
    size_t raw_bound_after(size_t n, bool new_stream) const {
        return raw_bound() + record_bound(n) + (new_stream ? kDirectoryEntryBound : 0);
    }
    uint64_t generation() const { return generation_; }

    // The section of `sid`, created on its first record in this block. `slot` and `slot_gen`
    // belong to the stream: they remember its section for as long as this block is open.
    Section& section_for(uint32_t sid, Section*& slot, uint64_t& slot_gen) {
        if (slot_gen != generation_) {
            sections_.push_back(pool_.take(sid));
            slot = sections_.back().get();
            slot_gen = generation_;
        }
        return *slot;
    }
    bool has_section(uint64_t slot_gen) const { return slot_gen == generation_; }

    void added(size_t bytes, size_t nnz) {
        bytes_ += bytes;
        ++records_;
        nnz_ += nnz;
    }

    // Throws away what the block holds (a rejected record_many batch).
    void discard() {
        pool_.give_back(sections_);
        bytes_ = 0;
        records_ = 0;
        nnz_ = 0;
        ++generation_;
    }

    SealedBlock seal() {
        SealedBlock b;
        std::sort(sections_.begin(), sections_.end(),
                  [](const SectionPtr& x, const SectionPtr& y) { return x->sid < y->sid; });
        b.sections.swap(sections_);
        sections_.reserve(b.sections.size());
        b.records = records_;
        b.nnz = nnz_;
        b.bytes = bytes_;
        bytes_ = 0;
        records_ = 0;
        nnz_ = 0;
        ++generation_;  // every stream's section slot is stale now
        return b;
    }

private:
    SectionPool& pool_;
    std::vector<SectionPtr> sections_;
    uint64_t generation_ = 1;
    size_t bytes_ = 0;
    uint32_t records_ = 0;
    uint64_t nnz_ = 0;
};

}  // namespace ddl
