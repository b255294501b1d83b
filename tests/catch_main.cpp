// main() of every Catch2 test program, compiled once (Catch's runner is ~35 s of
// compile time per copy). A program whose tests need what a machine may lack
// (eBPF) defines vs_tests_may_run(): -1 runs them, anything else is the exit
// status (77: skipped, which CTest reports as such, never as passed).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

extern "C" __attribute__((weak)) int vs_tests_may_run() { return -1; }

int main(int argc, char** argv) {
  if (const int status = vs_tests_may_run(); status >= 0) return status;
  return Catch::Session().run(argc, argv);
}
