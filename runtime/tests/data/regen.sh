#!/bin/sh
# Regenerates the committed ELF objects that runtime/tests/loader.rs loads, so that the tests
# need no C compiler. Run from anywhere on an x86-64 Linux machine with gcc (these were made
# with Debian 12's gcc 12.2.0). The objects are inputs for the loader, not build products.
set -eu
cd "$(dirname "$0")"
COMMON="-c -O2 -fno-stack-protector -fno-ident"
# Non-PIC, small code model: absolute R_X86_64_32S for the table, PLT32 to the extern.
gcc $COMMON -fno-pic -mcmodel=small -o kernels_nopic.o kernels.c
# PIC: PC-relative data access, GOT (REX_GOTPCRELX) for the global, PLT32 calls.
gcc $COMMON -fpic -o kernels_pic.o kernels.c
# An extern's address taken in non-PIC code (R_X86_64_32) and in PIC code (GOT).
gcc $COMMON -fno-pic -mcmodel=small -o abs32_nopic.o abs32.c
gcc $COMMON -fpic -o abs32_pic.o abs32.c
# Kernels with kiln's calling convention, for the CpuDevice unit tests.
gcc $COMMON -fpic -o device_pic.o device.c
