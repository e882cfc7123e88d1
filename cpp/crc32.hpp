// CRC-32 (zlib / ISO-HDLC, reflected polynomial 0xEDB88320), so that Python's zlib.crc32 is an
// independent check of everything the native writer produces. It runs over every compressed block
// and every raw payload, on both sides: on x86-64 CPUs with PCLMULQDQ (nearly all since 2010)
// long buffers are folded 64 bytes at a time with carry-less multiplication (Intel, "Fast CRC
// Computation for Generic Polynomials Using PCLMULQDQ", 2009); the rest goes through
// slicing-by-8 tables. The CPU is asked at run time: the build stays baseline x86-64.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DDL_CRC_CLMUL 1
#endif

namespace ddl {

namespace detail {
struct Crc32Tables {
    std::array<std::array<uint32_t, 256>, 8> t{};
    Crc32Tables() {
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
            t[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; ++i)
            for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
};
inline const Crc32Tables& crc32_tables() {
    static const Crc32Tables tables;
    return tables;
}

// The register state `c` (pre-inverted) carried over n bytes, 8 at a time.
inline uint32_t crc32_tables_update(uint32_t c, const uint8_t* p, size_t n) {
    const auto& t = crc32_tables().t;
    while (n >= 8) {
        uint32_t lo, hi;
        std::memcpy(&lo, p, 4);
        std::memcpy(&hi, p + 4, 4);
        lo ^= c;  // little-endian hosts only (checked in CMakeLists.txt)
        c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
            t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = t[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c;
}

#ifdef DDL_CRC_CLMUL
// Folding constants of the reflected polynomial: x^(4*128+32) and x^(4*128-32) mod P (four
// lanes, 64 bytes a step), x^(128+32) and x^(128-32) mod P (one lane), x^64 mod P (128 -> 64
// bits), and P' and mu for the final Barrett reduction; all bit-reflected, shifted left by one.
alignas(16) constexpr uint64_t kFold4[2] = {0x0154442bd4ull, 0x01c6e41596ull};
alignas(16) constexpr uint64_t kFold1[2] = {0x01751997d0ull, 0x00ccaa009eull};
alignas(16) constexpr uint64_t kFold64[2] = {0x0163cd6124ull, 0};
alignas(16) constexpr uint64_t kBarrett[2] = {0x01db710641ull, 0x01f7011641ull};

#define DDL_CLMUL_TARGET __attribute__((target("pclmul,sse2")))

DDL_CLMUL_TARGET inline __m128i crc32_load(const uint8_t* q) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
}
// One lane folded over 128 bits (by the constants in `k`) and xored with the next 16 bytes.
DDL_CLMUL_TARGET inline __m128i crc32_fold(__m128i x, __m128i k, __m128i next) {
    return _mm_xor_si128(
        _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), next);
}

// The register state carried over n bytes, n >= 64 and a multiple of 16.
DDL_CLMUL_TARGET inline uint32_t crc32_clmul_update(uint32_t c, const uint8_t* p, size_t n) {
    __m128i x1 = _mm_xor_si128(crc32_load(p), _mm_cvtsi32_si128(int(c)));
    __m128i x2 = crc32_load(p + 16), x3 = crc32_load(p + 32), x4 = crc32_load(p + 48);
    p += 64;
    n -= 64;
    __m128i k = _mm_load_si128(reinterpret_cast<const __m128i*>(kFold4));
    // Four lanes, each folded over the 64 bytes that follow it.
    while (n >= 64) {
        x1 = crc32_fold(x1, k, crc32_load(p));
        x2 = crc32_fold(x2, k, crc32_load(p + 16));
        x3 = crc32_fold(x3, k, crc32_load(p + 32));
        x4 = crc32_fold(x4, k, crc32_load(p + 48));
        p += 64;
        n -= 64;
    }
    // The four lanes into one, then 16 bytes at a time.
    k = _mm_load_si128(reinterpret_cast<const __m128i*>(kFold1));
    x1 = crc32_fold(x1, k, x2);
    x1 = crc32_fold(x1, k, x3);
    x1 = crc32_fold(x1, k, x4);
    while (n >= 16) {
        x1 = crc32_fold(x1, k, crc32_load(p));
        p += 16;
        n -= 16;
    }
    // 128 bits to 64, then Barrett reduction to 32.
    const __m128i mask32 = _mm_setr_epi32(-1, 0, -1, 0);
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), _mm_clmulepi64_si128(x1, k, 0x10));
    k = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(kFold64));
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 4),
                       _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k, 0x00));
    k = _mm_load_si128(reinterpret_cast<const __m128i*>(kBarrett));
    __m128i t = _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k, 0x10);
    t = _mm_clmulepi64_si128(_mm_and_si128(t, mask32), k, 0x00);
    x1 = _mm_xor_si128(x1, t);
    return uint32_t(_mm_cvtsi128_si32(_mm_srli_si128(x1, 4)));
}

inline bool crc32_has_clmul() {
    static const bool has = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse2");
    return has;
}
#endif
}  // namespace detail

// Continue a CRC: crc32_update(0, ...) starts one; results chain like zlib.crc32(data, crc).
inline uint32_t crc32_update(uint32_t crc, const uint8_t* p, size_t n) {
    uint32_t c = ~crc;
#ifdef DDL_CRC_CLMUL
    if (n >= 256 && detail::crc32_has_clmul()) {
        const size_t bulk = n & ~size_t(15);
        c = detail::crc32_clmul_update(c, p, bulk);
        p += bulk;
        n -= bulk;
    }
#endif
    return ~detail::crc32_tables_update(c, p, n);
}

inline uint32_t crc32(const uint8_t* p, size_t n) { return crc32_update(0, p, n); }

}  // namespace ddl
