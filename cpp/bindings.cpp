// Python bindings of the native core: argument conversion and GIL handling only. Every call that
// encodes, waits or does I/O releases the GIL; the numpy arrays it reads stay referenced by this
// frame for the whole call. C++ exceptions become the classes of disco_data_logger/errors.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "codec.hpp"
#include "decoder.hpp"
#include "errors.hpp"
#include "logger_core.hpp"
#include "periodic.hpp"

#ifndef DDL_VERSION
#define DDL_VERSION "0+unknown"
#endif

namespace py = pybind11;
using ddl::InvalidInput;

namespace {

// Python exception classes from disco_data_logger.errors; references held for the process life.
struct ErrorTypes {
    PyObject* invalid = PyExc_ValueError;
    PyObject* unknown = PyExc_KeyError;
    PyObject* closed = PyExc_RuntimeError;
    PyObject* writer = PyExc_OSError;
    PyObject* format = PyExc_ValueError;
};
ErrorTypes g_errors;

void load_error_types() {
    py::module_ errors = py::module_::import("disco_data_logger.errors");
    auto grab = [&](const char* name) { return py::object(errors.attr(name)).release().ptr(); };
    g_errors.invalid = grab("InvalidRecordError");
    g_errors.unknown = grab("UnknownStreamError");
    g_errors.closed = grab("LoggerClosedError");
    g_errors.writer = grab("WriterError");
    g_errors.format = grab("FormatError");
}

uint32_t stream_arg(int64_t sid) {
    if (sid < 0 || sid > int64_t(std::numeric_limits<uint32_t>::max()))
        throw ddl::UnknownStream("unknown stream id " + std::to_string(sid));
    return uint32_t(sid);
}

[[noreturn]] void bad_array(ddl::LoggerCore& core, uint32_t sid, const std::string& what) {
    throw InvalidInput("stream " + std::to_string(sid) + " (" + core.stream_name(sid) + "): " + what);
}

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// The caller's own array when it already is a 1-D C-contiguous array of T: the common case in a
// simulation loop, where conversion would cost more than encoding a small record.
template <class T>
bool borrow_exact(py::handle h, py::array_t<T>& out) {
    if (!py::array_t<T, py::array::c_style>::check_(h)) return false;
    auto a = py::reinterpret_borrow<py::array_t<T>>(h);
    if (a.ndim() != 1) return false;
    out = std::move(a);
    return true;
}

// `h` as a numpy array, refused unless it is array-like and 1-D.
py::array one_d_array(ddl::LoggerCore& core, uint32_t sid, py::handle h, const char* what) {
    py::array a = py::array::ensure(h);
    if (!a) bad_array(core, sid, std::string(what) + " must be array-like");
    if (a.ndim() != 1)
        bad_array(core, sid, std::string(what) + " must be a 1-D array (got " +
                                 std::to_string(a.ndim()) + "-D)");
    return a;
}

// 1-D int64 view of `h` (copied only when its dtype or layout differ).
py::array_t<int64_t> indices_arg(ddl::LoggerCore& core, uint32_t sid, py::handle h,
                                 const char* what = "indices") {
    py::array_t<int64_t> fast;
    if (borrow_exact(h, fast)) return fast;
    py::array a = one_d_array(core, sid, h, what);
    const char kind = a.dtype().kind();
    if (a.size() > 0 && kind != 'i' && kind != 'u')
        bad_array(core, sid, std::string(what) + " must have an integer dtype (got " + dtype_name(a) + ")");
    if (kind == 'u' && a.itemsize() == 8 && a.size() > 0) {
        auto u = py::array_t<uint64_t, py::array::forcecast>::ensure(a);
        auto r = u.unchecked<1>();
        for (py::ssize_t i = 0; i < r.shape(0); ++i)
            if (r(i) > uint64_t(std::numeric_limits<int64_t>::max()))
                bad_array(core, sid, std::string(what) + " value " + std::to_string(r(i)) +
                                         " at position " + std::to_string(i) + " exceeds 2^63-1");
    }
    auto out = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    if (!out) bad_array(core, sid, std::string(what) + " cannot be converted to int64");
    return out;
}

py::array_t<double> values_arg(ddl::LoggerCore& core, uint32_t sid, py::handle h,
                               const char* what = "values") {
    py::array_t<double> fast;
    if (borrow_exact(h, fast)) return fast;
    py::array a = one_d_array(core, sid, h, what);
    const char kind = a.dtype().kind();
    if (a.size() > 0 && kind != 'i' && kind != 'u' && kind != 'f')
        bad_array(core, sid, std::string(what) + " must have a real numeric dtype (got " +
                                 dtype_name(a) + ")");
    auto out = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(a);
    if (!out) bad_array(core, sid, std::string(what) + " cannot be converted to float64");
    return out;
}

// Moves the column into a heap holder owned by the numpy array: no copy.
template <class Vec>
py::array_t<typename Vec::value_type> to_numpy(Vec&& v) {
    auto* holder = new Vec(std::move(v));
    py::capsule owner(holder, [](void* p) { delete static_cast<Vec*>(p); });
    return py::array_t<typename Vec::value_type>(py::ssize_t(holder->size()), holder->data(), owner);
}

py::dict registration_dict(const ddl::RegistrationInfo& r) {
    py::dict d;
    d["stream_id"] = r.stream_id;
    d["epoch_scale"] = r.epoch_scale;
    d["value_scale"] = r.exact ? py::object(py::none()) : py::object(py::float_(r.value_scale));
    d["exact"] = r.exact;
    d["periodic"] = r.periodic;
    d["json"] = py::bytes(r.json);
    return d;
}

py::dict result_dict(ddl::DecodeResult&& r) {
    py::dict out;
    py::list parts;
    for (auto& c : r.parts) {
        py::dict part;
        part["stream_id"] = to_numpy(std::move(c.stream_id));
        part["epoch"] = to_numpy(std::move(c.epoch));
        part["offsets"] = to_numpy(std::move(c.offsets));
        part["indices"] = to_numpy(std::move(c.indices));
        part["values"] = to_numpy(std::move(c.values));
        parts.append(part);
    }
    out["parts"] = parts;
    py::dict regs;
    for (const auto& kv : r.registrations) regs[py::int_(kv.first)] = registration_dict(kv.second);
    out["registrations"] = regs;
    py::list skipped;
    for (const auto& s : r.skipped) {
        py::dict d;
        d["segment"] = s.segment;
        d["offset"] = s.offset;
        d["length"] = s.length;
        d["reason"] = s.reason;
        skipped.append(d);
    }
    out["skipped"] = skipped;
    py::list segments;
    for (const auto& s : r.segments) {
        py::dict d;
        d["path"] = s.path;
        d["legacy"] = s.legacy;
        d["has_footer"] = s.has_footer;
        d["torn"] = s.torn;
        d["bytes"] = s.bytes;
        d["blocks"] = s.blocks;
        d["bad_blocks"] = s.bad_blocks;
        d["records"] = s.records;
        segments.append(d);
    }
    out["segments"] = segments;
    std::set<uint32_t> unregistered(r.unregistered.begin(), r.unregistered.end());
    out["unregistered"] = std::vector<uint32_t>(unregistered.begin(), unregistered.end());
    return out;
}

ddl::DecodeOptions decode_options(const py::dict& fallback, const py::object& stream_ids,
                                  unsigned threads) {
    ddl::DecodeOptions o;
    for (auto item : fallback) {
        ddl::RegistrationInfo r;
        r.stream_id = item.first.cast<uint32_t>();
        auto t = item.second.cast<py::tuple>();  // (epoch_scale, value_scale or None)
        r.epoch_scale = t[0].cast<double>();
        r.exact = t[1].is_none();
        r.value_scale = r.exact ? 0.0 : t[1].cast<double>();
        o.fallback[r.stream_id] = r;
    }
    if (!stream_ids.is_none()) {
        o.filter = true;
        o.stream_ids = stream_ids.cast<std::vector<uint32_t>>();
    }
    o.threads = threads;
    return o;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "Native core of disco-data-logger (private: use the disco_data_logger package).";
    m.attr("__version__") = DDL_VERSION;
    m.attr("FORMAT_VERSION") = int(ddl::kFormatVersion);
    m.attr("MAX_NNZ") = ddl::kMaxNnz;

    load_error_types();
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ddl::InvalidInput& e) {
            PyErr_SetString(g_errors.invalid, e.what());
        } catch (const ddl::UnknownStream& e) {
            PyErr_SetObject(g_errors.unknown, py::make_tuple(e.what()).ptr());
        } catch (const ddl::ClosedError& e) {
            PyErr_SetString(g_errors.closed, e.what());
        } catch (const ddl::WriterFailure& e) {
            // OSError(errno, message) so that .errno tells disk-full from permission-denied.
            PyErr_SetObject(g_errors.writer, py::make_tuple(e.error_number, e.what()).ptr());
        } catch (const ddl::FormatFailure& e) {
            PyErr_SetString(g_errors.format, e.what());
        }
    });

    py::class_<ddl::LoggerCore, std::shared_ptr<ddl::LoggerCore>>(m, "LoggerCore")
        .def(py::init([](const std::string& dir, size_t ring_bytes, size_t block_bytes,
                         uint64_t rotate_bytes, int zstd_level, double flush_interval) {
                 ddl::LoggerOptions o;
                 o.dir = dir;
                 o.ring_bytes = ring_bytes;
                 o.block_bytes = block_bytes;
                 o.rotate_bytes = rotate_bytes;
                 o.zstd_level = zstd_level;
                 o.flush_interval = flush_interval;
                 py::gil_scoped_release nogil;
                 return std::make_shared<ddl::LoggerCore>(o);
             }),
             py::arg("dir"), py::arg("ring_bytes"), py::arg("block_bytes"), py::arg("rotate_bytes"),
             py::arg("zstd_level"), py::arg("flush_interval"))
        .def(
            "register_stream",
            [](ddl::LoggerCore& c, const std::string& name, double epoch_scale,
               py::object value_scale, bool periodic, const std::string& json) {
                const bool exact = value_scale.is_none();
                const double vs = exact ? 0.0 : value_scale.cast<double>();
                py::gil_scoped_release nogil;
                return c.register_stream(name, epoch_scale, vs, exact, periodic, json);
            },
            py::arg("name"), py::arg("epoch_scale"), py::arg("value_scale"), py::arg("periodic"),
            py::arg("json"), "Register a stream; value_scale=None stores values exactly.")
        .def(
            "record",
            [](ddl::LoggerCore& c, int64_t sid_arg, double epoch, py::handle indices,
               py::handle values) {
                const uint32_t sid = stream_arg(sid_arg);
                auto idx = indices_arg(c, sid, indices);
                auto vals = values_arg(c, sid, values);
                if (idx.size() != vals.size())
                    bad_array(c, sid, "indices and values differ in length (" +
                                          std::to_string(idx.size()) + " vs " +
                                          std::to_string(vals.size()) + ")");
                py::gil_scoped_release nogil;
                c.record(sid, epoch, idx.data(), vals.data(), size_t(idx.size()));
            },
            py::arg("stream_id"), py::arg("epoch"), py::arg("indices"), py::arg("values"))
        .def(
            "record_many",
            [](ddl::LoggerCore& c, py::handle stream_ids, py::handle epochs, py::handle offsets,
               py::handle indices, py::handle values) {
                auto sids = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(
                    py::array::ensure(stream_ids));
                if (!sids || sids.ndim() > 1)
                    throw InvalidInput("record_many: stream_ids must be an int or a 1-D array of ints");
                std::vector<uint32_t> sid32(size_t(sids.size()));
                for (py::ssize_t i = 0; i < sids.size(); ++i) sid32[size_t(i)] = stream_arg(sids.data()[i]);
                if (sid32.empty()) throw InvalidInput("record_many: stream_ids is empty");
                const uint32_t first = sid32[0];
                c.check_stream(first);
                auto ep = values_arg(c, first, epochs, "epochs");
                auto off = indices_arg(c, first, offsets, "offsets");
                auto idx = indices_arg(c, first, indices);
                auto vals = values_arg(c, first, values);
                const size_t n_records = size_t(ep.size());
                if (size_t(off.size()) != n_records + 1)
                    throw InvalidInput("record_many: offsets must have len(epochs) + 1 entries (got " +
                                       std::to_string(off.size()) + " for " +
                                       std::to_string(n_records) + " records)");
                if (idx.size() != vals.size())
                    throw InvalidInput("record_many: indices and values differ in length");
                if (n_records > 0 && off.data()[n_records] != idx.size())
                    throw InvalidInput("record_many: offsets[-1] must equal len(indices)");
                py::gil_scoped_release nogil;
                c.record_many(sid32.data(), sid32.size(), ep.data(), n_records, off.data(),
                              idx.data(), vals.data());
            },
            py::arg("stream_ids"), py::arg("epochs"), py::arg("offsets"), py::arg("indices"),
            py::arg("values"))
        .def("flush", &ddl::LoggerCore::flush, py::call_guard<py::gil_scoped_release>())
        .def("close", &ddl::LoggerCore::close, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("closed", &ddl::LoggerCore::closed)
        .def("stream_count", &ddl::LoggerCore::stream_count)
        .def("stats",
             [](ddl::LoggerCore& c) {
                 ddl::LoggerStats s;
                 {
                     py::gil_scoped_release nogil;
                     s = c.stats();
                 }
                 py::dict d;
                 d["records"] = s.records;
                 d["nonzeros"] = s.nonzeros;
                 d["raw_bytes"] = s.raw_bytes;
                 d["compressed_bytes"] = s.compressed_bytes;
                 d["blocks"] = s.blocks;
                 d["segments"] = s.segments;
                 d["stalls"] = s.stalls;
                 d["stall_seconds"] = s.stall_seconds;
                 d["queue_peak_bytes"] = s.queue_peak_bytes;
                 d["streams"] = s.streams;
                 return d;
             })
        .def(
            "stream_counters",
            [](ddl::LoggerCore& c, py::object ids) {
                std::vector<uint32_t> wanted;
                const bool some = !ids.is_none();
                if (some)
                    for (auto h : ids) wanted.push_back(stream_arg(h.cast<int64_t>()));
                std::vector<ddl::StreamCounters> v;
                {
                    py::gil_scoped_release nogil;
                    v = c.stream_counters(some ? &wanted : nullptr);
                }
                py::list out;
                for (const auto& s : v)
                    out.append(py::make_tuple(s.records, s.min_epoch, s.max_epoch));
                return out;
            },
            py::arg("ids") = py::none(),
            "(records, min_epoch, max_epoch) of every stream, or of the given ids in order.");

    py::class_<ddl::PeriodicAggregator, std::shared_ptr<ddl::PeriodicAggregator>>(m, "PeriodicCore")
        .def(py::init([](std::shared_ptr<ddl::LoggerCore> core, int64_t sid, double periodicity,
                         const std::string& kind) {
                 using K = ddl::PeriodicAggregator::Kind;
                 if (kind != "state" && kind != "accumulator")
                     throw InvalidInput("kind must be 'state' or 'accumulator' (got '" + kind + "')");
                 return std::make_shared<ddl::PeriodicAggregator>(
                     std::move(core), stream_arg(sid), periodicity,
                     kind == "state" ? K::State : K::Accumulator);
             }),
             py::arg("core"), py::arg("stream_id"), py::arg("periodicity"), py::arg("kind"))
        .def(
            "record",
            [](ddl::PeriodicAggregator& p, ddl::LoggerCore& c, double epoch, py::handle indices,
               py::handle values) {
                const uint32_t sid = p.stream_id();
                auto idx = indices_arg(c, sid, indices);
                auto vals = values_arg(c, sid, values);
                if (idx.size() != vals.size())
                    bad_array(c, sid, "indices and values differ in length (" +
                                          std::to_string(idx.size()) + " vs " +
                                          std::to_string(vals.size()) + ")");
                py::gil_scoped_release nogil;
                p.record(epoch, idx.data(), vals.data(), size_t(idx.size()));
            },
            py::arg("core"), py::arg("epoch"), py::arg("indices"), py::arg("values"))
        .def("close", &ddl::PeriodicAggregator::close, py::arg("final_epoch"),
             py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("closed", &ddl::PeriodicAggregator::closed)
        .def_property_readonly("period_ticks", &ddl::PeriodicAggregator::period_ticks);

    m.def(
        "decode_directory",
        [](const std::string& dir, py::dict fallback, py::object stream_ids, unsigned threads) {
            ddl::DecodeOptions o = decode_options(fallback, stream_ids, threads);
            ddl::DecodeResult r;
            {
                py::gil_scoped_release nogil;
                r = ddl::decode_directory(dir, o);
            }
            return result_dict(std::move(r));
        },
        py::arg("dir"), py::arg("fallback") = py::dict(), py::arg("stream_ids") = py::none(),
        py::arg("threads") = 0,
        "Decode every segment of a logger directory into columns (numpy arrays).");
    m.def(
        "decode_files",
        [](const std::vector<std::string>& paths, py::dict fallback, py::object stream_ids,
           unsigned threads) {
            ddl::DecodeOptions o = decode_options(fallback, stream_ids, threads);
            ddl::DecodeResult r;
            {
                py::gil_scoped_release nogil;
                r = ddl::decode_files(paths, o);
            }
            return result_dict(std::move(r));
        },
        py::arg("paths"), py::arg("fallback") = py::dict(), py::arg("stream_ids") = py::none(),
        py::arg("threads") = 0, "Decode the given segment files, in order, into columns.");
    m.def("list_segments", &ddl::list_segments, py::arg("dir"));
}
