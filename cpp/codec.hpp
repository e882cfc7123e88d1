// The byte-level vocabulary of the format (docs/FORMAT.md): varints, zigzag, quantisation, the
// constants and bounds every reader and the writer share, and the growable byte buffer the encoder
// writes into. Pure functions over byte buffers; no threads, no I/O.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace ddl {

constexpr uint8_t kFormatVersion = 2;   // what the writer writes
constexpr uint8_t kFormatVersion1 = 1;  // read only (FORMAT.md section 8)
constexpr uint32_t kSkippableMagic = 0x184D2A5Du;
constexpr uint32_t kZstdMagic = 0xFD2FB528u;
constexpr uint8_t kKindSegmentHeader = 1;
constexpr uint8_t kKindRegistration = 2;
constexpr uint8_t kKindBlockHeader = 3;
constexpr uint8_t kKindSegmentFooter = 4;
constexpr uint32_t kMaxRawBlock = 1u << 28;          // bound every reader enforces before allocating
constexpr uint32_t kMaxRegistrationBody = 1u << 26;  // format 2: raw registrations body
constexpr uint32_t kMaxJson = 1u << 24;              // format 1: registration JSON text
// Per record: keeps one record far below kMaxRawBlock (10 + 10 bytes per non-zero at worst).
constexpr size_t kMaxRecordNnz = size_t(1) << 23;
constexpr size_t kMaxVarint = 10;

// A growable byte buffer written through raw pointers: the encoder reserves the worst case for a
// record once, then writes without per-byte bounds checks.
class Bytes {
public:
    Bytes() = default;
    Bytes(const Bytes&) = delete;
    Bytes& operator=(const Bytes&) = delete;
    Bytes(Bytes&& o) noexcept : data_(o.data_), size_(o.size_), cap_(o.cap_) {
        o.data_ = nullptr;
        o.size_ = o.cap_ = 0;
    }
    Bytes& operator=(Bytes&& o) noexcept {
        if (this != &o) {
            std::free(data_);
            data_ = o.data_;
            size_ = o.size_;
            cap_ = o.cap_;
            o.data_ = nullptr;
            o.size_ = o.cap_ = 0;
        }
        return *this;
    }
    ~Bytes() { std::free(data_); }

    uint8_t* data() { return data_; }
    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    size_t capacity() const { return cap_; }
    bool empty() const { return size_ == 0; }
    void clear() { size_ = 0; }

    // Make room for `extra` more bytes and return where they start.
    uint8_t* reserve_tail(size_t extra) {
        if (extra > cap_ - size_) grow(size_ + extra);
        return data_ + size_;
    }
    void commit_to(uint8_t* end) { size_ = size_t(end - data_); }
    void resize(size_t n) {
        if (n > cap_) grow(n);
        size_ = n;
    }
    void append(const void* p, size_t n) {
        if (n == 0) return;  // p may be null then (an empty vector's data())
        std::memcpy(reserve_tail(n), p, n);
        size_ += n;
    }
    // Give back memory of an oversized buffer (after one huge record) so idle buffers stay small.
    void shrink_to(size_t limit) {
        if (cap_ > limit && size_ <= limit) {
            if (limit == 0) {
                std::free(data_);
                data_ = nullptr;
                cap_ = 0;
                return;
            }
            void* p = std::realloc(data_, limit);
            if (p) {
                data_ = static_cast<uint8_t*>(p);
                cap_ = limit;
            }
        }
    }

private:
    void grow(size_t need) {
        size_t cap = cap_ ? cap_ : 64;
        while (cap < need) cap *= 2;
        void* p = std::realloc(data_, cap);
        if (!p) throw std::bad_alloc();
        data_ = static_cast<uint8_t*>(p);
        cap_ = cap;
    }
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
    size_t cap_ = 0;
};

inline uint64_t zigzag(int64_t v) { return (uint64_t(v) << 1) ^ uint64_t(v >> 63); }
inline int64_t unzigzag(uint64_t u) { return int64_t(u >> 1) ^ -int64_t(u & 1); }

inline uint8_t* put_varint(uint8_t* p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = uint8_t(v) | 0x80;
        v >>= 7;
    }
    *p++ = uint8_t(v);
    return p;
}

inline size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        ++n;
    }
    return n;
}

// Returns nullptr on truncation, on a varint longer than 10 bytes, or on one whose tenth byte
// carries bits beyond 2^64.
inline const uint8_t* get_varint(const uint8_t* p, const uint8_t* end, uint64_t& out) {
    uint64_t r = 0;
    for (int shift = 0; shift < 70 && p < end; shift += 7) {
        uint8_t c = *p++;
        if (shift == 63 && c > 1) return nullptr;
        r |= uint64_t(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            out = r;
            return p;
        }
    }
    return nullptr;
}

inline void put_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
inline void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void put_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
inline void put_f64(uint8_t* p, double v) { std::memcpy(p, &v, 8); }
inline uint32_t get_u32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
inline uint64_t get_u64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}
inline double get_f64(const uint8_t* p) {
    double v;
    std::memcpy(&v, p, 8);
    return v;
}
inline uint64_t f64_bits(double v) {
    uint64_t b;
    std::memcpy(&b, &v, 8);
    return b;
}
inline double bits_f64(uint64_t b) {
    double v;
    std::memcpy(&v, &b, 8);
    return v;
}

// round(x / scale) half away from zero into int64; false when not finite or out of range.
// Inline instead of std::round: it runs once per value on the recording thread.
inline bool quantise(double x, double scale, int64_t& out) {
    const double y = x / scale;
    // [-2^63, 2^63): every double in it truncates to an int64; NaN fails both tests.
    if (!(y >= -9223372036854775808.0 && y < 9223372036854775808.0)) return false;
    int64_t t = int64_t(y);
    // Exact: for |y| < 2^52 both y and its truncation fit the mantissa; above, y is integral.
    const double frac = y - double(t);
    if (frac >= 0.5) ++t;
    else if (frac <= -0.5) --t;
    out = t;
    return true;
}

inline bool scale_ok(double s) { return std::isfinite(s) && s > 0; }

}  // namespace ddl
