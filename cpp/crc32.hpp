// CRC-32 (zlib / ISO-HDLC, reflected polynomial 0xEDB88320), so that Python's zlib.crc32 is an
// independent check of everything the native writer produces. Slicing-by-8 keeps it off the
// profile: it runs over every compressed block and every raw payload.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

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
}  // namespace detail

// Continue a CRC: crc32_update(0, ...) starts one; results chain like zlib.crc32(data, crc).
inline uint32_t crc32_update(uint32_t crc, const uint8_t* p, size_t n) {
    const auto& t = detail::crc32_tables().t;
    uint32_t c = ~crc;
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
    return ~c;
}

inline uint32_t crc32(const uint8_t* p, size_t n) { return crc32_update(0, p, n); }

}  // namespace ddl
