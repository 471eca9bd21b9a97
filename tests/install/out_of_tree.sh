#!/usr/bin/env bash
# The plugin author's path, for real: install the project into a temporary
# root, then build a C++ and a C plugin out of tree with nothing but
# pkg-config and the compiler, and load both.
#   out_of_tree.sh BUILD_ROOT SOURCE_DIR WORK_DIR LOAD_CHECK
set -euo pipefail
build_root=$1 src=$2 work=$3 load_check=$4

rm -rf "$work"
mkdir -p "$work"
meson install -C "$build_root" --no-rebuild --quiet --destdir "$work/root" >/dev/null

pc=$(find "$work/root" -name tracetunnel-plugin.pc -print -quit)
[[ -n $pc ]] || { echo "tracetunnel-plugin.pc was not installed" >&2; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_SYSROOT_DIR=$work/root
cflags=$(pkg-config --cflags tracetunnel-plugin)
echo "pkg-config --cflags tracetunnel-plugin: $cflags"
for h in abi.h trace.h trace.hpp; do
    find "$work/root" -path "*/tracetunnel/$h" | grep -q . || { echo "header $h not installed" >&2; exit 1; }
done

cd "$work"
# shellcheck disable=SC2086
c++ -std=c++20 -shared -fPIC $cflags "$src/hello.cpp" -o libhello_cpp.so
# shellcheck disable=SC2086
cc -shared -fPIC $cflags "$src/hello.c" -o libhello_c.so

"$load_check" "$work/libhello_cpp.so" hello_cpp
"$load_check" "$work/libhello_c.so" hello_c
