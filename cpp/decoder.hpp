// Reads logger directories back (docs/FORMAT.md): formats 2 and 1 and the 0.1.x layout, into one
// set of flat columns (stream ids, epochs, list offsets, indices, values), never an object per
// record. The blocks of every segment are decoded in parallel, straight into the final buffers,
// whose sizes come from the block headers (and, when only some streams are wanted, from the block
// directories). Corrupt or torn data is skipped and reported with a typed kind, never returned and
// never fatal.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "frames.hpp"

namespace ddl {

// The kinds of skipped parts (FORMAT.md section 4).
enum class SkipKind : uint8_t {
    TornTail,
    CorruptFrame,
    BadBlock,
    BadSection,
    UnregisteredStream,
    InvalidRegistration,
    UnresolvedLabel,
    AfterFooter,
    UnreadableFile,
    UnsupportedVersion,
    LegacyChainBroken,
};
const char* skip_kind_name(SkipKind kind);

struct SkipReport {
    std::string segment;
    uint64_t offset = 0;
    uint64_t length = 0;
    SkipKind kind = SkipKind::CorruptFrame;
    std::string reason;
    int64_t stream_id = -1;  // the stream, for the kinds about one stream; -1 otherwise
};

// What a reader knows of a stream from an in-band registration (or a sidecar).
struct StreamInfo {
    Registration reg;          // scales and flags; labels of a format-2 registration
    std::string json;          // the JSON text of a format-1 registration
    int version = 2;           // 2 or 1: where it came from; 0: a sidecar's scales
    uint32_t unresolved = 0;   // format 2: labels whose strings were not found
};

struct SegmentSummary {
    std::string path;
    int version = 0;             // 2, 1, or 0 for 0.1.x
    bool has_footer = false;
    bool torn = false;           // the file ends inside a frame
    uint64_t bytes = 0;
    uint64_t blocks = 0;         // intact blocks (frames for 0.1.x)
    uint64_t bad_blocks = 0;     // blocks skipped for a checksum or payload error
    uint64_t records = 0;        // records decoded (of the selected streams)
};

// A malloc'd array handed to Python without a copy (release() gives up ownership).
template <class T>
class Column {
public:
    Column() = default;
    Column(const Column&) = delete;
    Column& operator=(const Column&) = delete;
    Column(Column&& o) noexcept : data_(o.data_), size_(o.size_) {
        o.data_ = nullptr;
        o.size_ = 0;
    }
    Column& operator=(Column&& o) noexcept {
        if (this != &o) {
            std::free(data_);
            data_ = o.data_;
            size_ = o.size_;
            o.data_ = nullptr;
            o.size_ = 0;
        }
        return *this;
    }
    ~Column() { std::free(data_); }
    void allocate(size_t n);  // uninitialised; throws std::bad_alloc
    void shrink(size_t n) { size_ = n; }
    T* data() { return data_; }
    const T* data() const { return data_; }
    size_t size() const { return size_; }
    T* release() {
        T* p = data_;
        data_ = nullptr;
        size_ = 0;
        return p;
    }

private:
    T* data_ = nullptr;
    size_t size_ = 0;
};

struct DecodeOptions {
    // Sidecar scales, used for streams without an in-band registration (0.1.x directories).
    std::map<uint32_t, Registration> fallback;
    bool filter = false;
    std::vector<uint32_t> stream_ids;  // kept when `filter`; registrations of the others too
    // Only these segment files (names such as "00003.seg.zst", not paths) are read when
    // `segment_filter`: the ones a shard's journal lists, so a stray copy is never read.
    bool segment_filter = false;
    std::vector<std::string> segments;
    // False: no registrations are returned (a caller that has the streams' labels elsewhere,
    // such as an experiment's index, saves building them).
    bool registrations = true;
    unsigned threads = 0;              // 0: hardware concurrency
};

struct DecodeResult {
    // Record k owns indices/values [offsets[k], offsets[k+1]). The offsets are int32 unless the
    // non-zeros do not fit (`large_offsets`): Arrow's list and large_list layouts as they are.
    Column<uint32_t> stream_id;
    Column<double> epoch;
    Column<int32_t> offsets32;
    Column<int64_t> offsets64;
    bool large_offsets = false;
    Column<int64_t> indices;
    Column<double> values;
    std::map<uint32_t, StreamInfo> registrations;  // in-band ones found (of selected streams)
    std::vector<SkipReport> skipped;
    std::vector<SegmentSummary> segments;
    // Streams whose records had no registration (in-band or fallback): the caller may retry
    // with their sidecars as fallback.
    std::vector<uint32_t> unregistered;
    size_t records() const { return stream_id.size(); }
};

struct RegistrationsResult {
    std::map<uint32_t, StreamInfo> registrations;
    std::vector<SkipReport> skipped;
};

// Segment files of a directory in numeric order (NNNNN.seg.zst).
std::vector<std::string> list_segments(const std::string& dir);

DecodeResult decode_directory(const std::string& dir, const DecodeOptions& opts);

// The in-band registrations of every segment, without decompressing any block.
// `segments`: when not null, only these segment files (names, as in DecodeOptions).
RegistrationsResult read_registrations(const std::string& dir,
                                       const std::vector<std::string>* segments = nullptr);

}  // namespace ddl
