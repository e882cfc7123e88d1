#!/usr/bin/env bash
# DuckDB's own S3 reader for the object-storage tests (tests/integration/test_object_store.py):
# DuckDB reads s3:// through its httpfs extension, which DuckDB downloads from its own servers at
# run time; the package registries carry it only as wheels for a given DuckDB release, and only
# for older releases than the one the test extra may install. So a matching pair goes into
# build/duckdb-httpfs/ (never into the environment), and the test runs DuckDB from there in a
# child process. Safe to run again; does nothing when the pair is there.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${DDL_DUCKDB_HTTPFS_VERSION:-1.5.5}"
target="build/duckdb-httpfs"
if [ -f "$target/.version" ] && [ "$(cat "$target/.version")" = "$version" ]; then
  exit 0
fi
rm -rf "$target"
python -m pip install -q --disable-pip-version-check --no-deps --target "$target" \
  "duckdb==$version" "duckdb-extension-httpfs==$version"
echo "$version" > "$target/.version"
