// Allocator for decoded columns. Large columns (hundreds of MB for a big directory) are mapped
// directly and marked for transparent huge pages: first-touch page faults were a third of decode
// time with 4 KiB pages. Small ones use malloc. Memory is handed to numpy with the vector.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

#include <sys/mman.h>

namespace ddl {

template <class T>
struct ColumnAllocator {
    using value_type = T;
    static constexpr size_t kMapThreshold = size_t(4) << 20;

    ColumnAllocator() noexcept = default;
    template <class U>
    ColumnAllocator(const ColumnAllocator<U>&) noexcept {}

    T* allocate(size_t n) {
        const size_t bytes = n * sizeof(T);
        if (bytes >= kMapThreshold) {
            void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
            ::madvise(p, bytes, MADV_HUGEPAGE);  // advice only: ignored where THP is off
#endif
            return static_cast<T*>(p);
        }
        void* p = std::malloc(bytes ? bytes : 1);
        if (!p) throw std::bad_alloc();
        return static_cast<T*>(p);
    }
    void deallocate(T* p, size_t n) noexcept {
        const size_t bytes = n * sizeof(T);
        if (bytes >= kMapThreshold) ::munmap(p, bytes);
        else std::free(p);
    }
    template <class U>
    bool operator==(const ColumnAllocator<U>&) const noexcept { return true; }
    template <class U>
    bool operator!=(const ColumnAllocator<U>&) const noexcept { return false; }
};

template <class T>
using ColumnVector = std::vector<T, ColumnAllocator<T>>;

}  // namespace ddl
