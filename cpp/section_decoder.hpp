// Decoding one stream's section of a format-2 block (docs/FORMAT.md section 5.2) straight into the
// final output columns. The columns of a section are decoded one after another in tight loops;
// the section is validated as it goes (5.3) and the caller discards what it wrote when it fails.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "codec.hpp"
#include "frames.hpp"

namespace ddl {

// Bytes of zeros after a decompressed payload, so that loops may read a little past a section.
constexpr size_t kSectionPadding = 64;

struct SectionScratch {
    std::vector<uint64_t> counts;  // c_r of every record
    std::vector<int64_t> q;        // the previous record's quantised values
};

// Where one section's records go: records from stream_id[0], non-zeros from indices[0], which is
// non-zero number `nnz_base` of the whole output (what the list offsets count).
struct SectionTarget {
    uint32_t* stream_id;
    double* epoch;
    int32_t* offsets32;  // one of the two
    int64_t* offsets64;
    int64_t* indices;
    double* values;
    int64_t nnz_base;
};

namespace detail {

// One varint from a buffer known to hold at least 10 more bytes. False for one longer than 10.
inline bool varint_at(const uint8_t*& p, uint64_t& out) {
    uint64_t b = *p++;
    if (b < 0x80) {
        out = b;
        return true;
    }
    uint64_t r = b & 0x7F;
    for (int shift = 7; shift < 63; shift += 7) {
        b = *p++;
        r |= (b & 0x7F) << shift;
        if (b < 0x80) {
            out = r;
            return true;
        }
    }
    b = *p++;  // the tenth byte: one bit left of 64
    if (b > 1) return false;
    out = r | (b << 63);
    return true;
}

// Reads k varints, calling f(i, value); false on a malformed varint or a read past `end`.
template <class F>
inline bool read_varints(const uint8_t*& p, const uint8_t* end, size_t k, F f) {
    if (size_t(end - p) / kMaxVarint >= k) {
        for (size_t i = 0; i < k; ++i) {
            uint64_t v;
            if (!varint_at(p, v)) return false;
            f(i, v);
        }
        return p <= end;
    }
    for (size_t i = 0; i < k; ++i) {
        uint64_t v;
        const uint8_t* q = get_varint(p, end, v);
        if (!q) return false;
        p = q;
        f(i, v);
    }
    return true;
}

template <class O>
const char* decode_section_as(const uint8_t* p, const uint8_t* end, uint32_t sid, uint32_t R,
                              uint64_t N, const Registration& reg, const SectionTarget& t,
                              O* offsets, SectionScratch& s) {
    const double es = reg.epoch_scale;
    uint64_t tick = 0;
    double* epoch = t.epoch;
    if (!read_varints(p, end, R, [&](size_t i, uint64_t v) {
            tick = (i == 0 ? 0 : tick) + uint64_t(unzigzag(v));
            epoch[i] = double(int64_t(tick)) * es;
        }))
        return "malformed ticks";
    for (uint32_t i = 0; i < R; ++i) t.stream_id[i] = sid;

    s.counts.resize(R);
    uint64_t* counts = s.counts.data();
    uint64_t nnz = 0, prev_n = 0;
    bool bad = false;
    const int64_t base = t.nnz_base;
    if (!read_varints(p, end, R, [&](size_t i, uint64_t c) {
            counts[i] = c;
            const uint64_t n = c == 0 ? prev_n : c - 1;
            if ((c == 0 && i == 0) || n > N - nnz) bad = true;
            offsets[i] = O(base + int64_t(nnz));
            nnz += bad ? 0 : n;
            prev_n = n;
        }))
        return "malformed counts";
    if (bad) return counts[0] == 0 ? "first record refers to a predecessor" : "record lengths exceed the directory's count";
    if (nnz != N) return "record lengths differ from the directory's count";

    // Indices: a record with c = 0 repeats its predecessor's list (already in the output).
    int64_t* idx = t.indices;
    size_t at = 0;
    prev_n = 0;
    for (uint32_t r = 0; r < R; ++r) {
        const uint64_t c = counts[r];
        const size_t n = size_t(c == 0 ? prev_n : c - 1);
        if (c == 0) {
            if (n) std::memmove(idx + at, idx + at - n, n * sizeof(int64_t));
        } else if (n > 0) {
            uint64_t prev = 0;
            int64_t* dst = idx + at;
            if (!read_varints(p, end, n, [&](size_t i, uint64_t v) {
                    if (i == 0) {
                        prev = v;
                    } else {
                        if (v >= uint64_t(INT64_MAX) - prev) bad = true;
                        prev = prev + 1 + v;
                    }
                    if (prev > uint64_t(INT64_MAX)) bad = true;
                    dst[i] = int64_t(prev);
                }))
                return "malformed indices";
            if (bad) return "index out of range";
        }
        at += n;
        prev_n = n;
    }

    double* vals = t.values;
    at = 0;
    prev_n = 0;
    if (reg.exact) {
        for (uint32_t r = 0; r < R; ++r) {
            const uint64_t c = counts[r];
            const size_t n = size_t(c == 0 ? prev_n : c - 1);
            if (size_t(end - p) / 8 < n) return "truncated values";
            double* dst = vals + at;
            if (c == 0) {
                const double* src = dst - n;
                for (size_t i = 0; i < n; ++i)
                    dst[i] = bits_f64(get_u64(p + 8 * i) ^ f64_bits(src[i]));
            } else if (n) {
                std::memcpy(dst, p, n * 8);
            }
            p += n * 8;
            at += n;
            prev_n = n;
        }
    } else {
        const double vs = reg.value_scale;
        if (s.q.size() < N) s.q.resize(N);
        int64_t* q = s.q.data();
        for (uint32_t r = 0; r < R; ++r) {
            const uint64_t c = counts[r];
            const size_t n = size_t(c == 0 ? prev_n : c - 1);
            double* dst = vals + at;
            bool ok;
            if (c == 0) {
                ok = read_varints(p, end, n, [&](size_t i, uint64_t v) {
                    q[i] = int64_t(uint64_t(q[i]) + uint64_t(unzigzag(v)));
                    dst[i] = double(q[i]) * vs;
                });
            } else {
                ok = read_varints(p, end, n, [&](size_t i, uint64_t v) {
                    q[i] = unzigzag(v);
                    dst[i] = double(q[i]) * vs;
                });
            }
            if (!ok) return "malformed values";
            at += n;
            prev_n = n;
        }
    }
    if (p != end) return "section length differs from its records";
    return nullptr;
}

}  // namespace detail

// Decodes the section [p, end) of stream `sid` with R records and N non-zeros (from the block's
// directory). Returns nullptr, or why the section is not valid (what was written is garbage then).
// The payload must be followed by kSectionPadding readable bytes.
inline const char* decode_section(const uint8_t* p, const uint8_t* end, uint32_t sid, uint32_t R,
                                  uint64_t N, const Registration& reg, const SectionTarget& t,
                                  SectionScratch& s) {
    if (t.offsets32) return detail::decode_section_as(p, end, sid, R, N, reg, t, t.offsets32, s);
    return detail::decode_section_as(p, end, sid, R, N, reg, t, t.offsets64, s);
}

}  // namespace ddl
