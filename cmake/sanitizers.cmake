# VRAMSCOPE_SANITIZE: AddressSanitizer + UndefinedBehaviorSanitizer on every
# target (scripts/test-sanitized.sh). UBSan does not recover: undefined
# behaviour fails the test that met it, as a memory error does.
# VRAMSCOPE_FUZZ: the libFuzzer harnesses of tests/fuzz (clang only). Every
# library is then compiled with -fsanitize=fuzzer-no-link (coverage for the
# fuzzer) and with the sanitizers, so that a harness finds memory errors in
# the code it calls and not only in itself.
option(VRAMSCOPE_SANITIZE "Build every target with ASan and UBSan (-fno-sanitize-recover=all)" OFF)
option(VRAMSCOPE_FUZZ "Build the libFuzzer harnesses of tests/fuzz (clang; turns VRAMSCOPE_SANITIZE on)" OFF)

if(VRAMSCOPE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang" OR NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "VRAMSCOPE_FUZZ needs clang (libFuzzer): configure with "
                        "-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++")
  endif()
  if(NOT VRAMSCOPE_SANITIZE)
    message(STATUS "VRAMSCOPE_FUZZ: turning VRAMSCOPE_SANITIZE on (a harness over uninstrumented libraries misses their memory errors)")
    set(VRAMSCOPE_SANITIZE ON CACHE BOOL "Build every target with ASan and UBSan (-fno-sanitize-recover=all)" FORCE)
  endif()
endif()

if(VRAMSCOPE_SANITIZE)
  set(VS_SANITIZE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${VS_SANITIZE_FLAGS}>")
  add_link_options(-fsanitize=address,undefined)
endif()

if(VRAMSCOPE_FUZZ)
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=fuzzer-no-link>")
  # How long each fuzz_<name> test fuzzes after replaying its corpus.
  set(VRAMSCOPE_FUZZ_SECONDS 30 CACHE STRING "Seconds each fuzz_<name> CTest test fuzzes after its seed corpus")
endif()
