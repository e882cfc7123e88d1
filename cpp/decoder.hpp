// Reads segments back into columns (docs/FORMAT.md sections 3-6): stream ids, epochs, CSR offsets,
// indices and values as flat arrays, never an object per record. Corrupt or torn data is skipped
// and reported, never returned and never fatal. Segments of a v1 directory decode in parallel.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "frames.hpp"

namespace ddl {

struct DecodedColumns {
    std::vector<uint32_t> stream_id;
    std::vector<double> epoch;
    std::vector<int64_t> offsets{0};
    std::vector<int64_t> indices;
    std::vector<double> values;
    size_t records() const { return stream_id.size(); }
};

struct SkipReport {
    std::string segment;
    uint64_t offset = 0;
    uint64_t length = 0;  // bytes skipped (to the end of the file when the rest is unreadable)
    std::string reason;
};

struct SegmentSummary {
    std::string path;
    bool legacy = false;
    bool has_footer = false;
    bool torn = false;           // the file ends inside a frame
    uint64_t bytes = 0;
    uint64_t blocks = 0;         // intact blocks (frames for 0.1.x)
    uint64_t bad_blocks = 0;     // blocks skipped for a checksum or payload error
    uint64_t records = 0;        // records decoded (before the stream filter)
};

struct DecodeOptions {
    // Sidecar registrations: used for streams without an in-band registration (0.1.x dirs).
    std::map<uint32_t, RegistrationInfo> fallback;
    bool filter = false;
    std::vector<uint32_t> stream_ids;  // kept when `filter`
    unsigned threads = 0;              // 0: hardware concurrency
};

struct DecodeResult {
    // One part per segment (one in all for a 0.1.x directory), in file order; handing the parts
    // over separately saves concatenating them (Arrow takes them as record batches).
    std::vector<DecodedColumns> parts;
    std::map<uint32_t, RegistrationInfo> registrations;  // in-band ones found
    std::vector<SkipReport> skipped;
    std::vector<SegmentSummary> segments;
    // Stream ids whose records had no registration (in-band or fallback); the caller may retry
    // with their sidecars as fallback.
    std::vector<uint32_t> unregistered;
};

// Segment files of a directory in numeric order (NNNNN.seg.zst).
std::vector<std::string> list_segments(const std::string& dir);

DecodeResult decode_files(const std::vector<std::string>& paths, const DecodeOptions& opts);
DecodeResult decode_directory(const std::string& dir, const DecodeOptions& opts);

}  // namespace ddl
