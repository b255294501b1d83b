# One fuzz_<name> CTest test: replay the seeds (every input of every seed
# directory that exists), then fuzz for SECONDS from them. Fails on any crash,
# sanitizer report, leak, per-input timeout (60 s) or out-of-memory (4 GiB).
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK} ${ARTIFACTS})
set(dirs)
foreach(dir ${SEEDS})
  if(IS_DIRECTORY ${dir})
    list(APPEND dirs ${dir})
  endif()
endforeach()
if(NOT dirs)
  message(FATAL_ERROR "no seed corpus for ${HARNESS} (looked in ${SEEDS})")
endif()
execute_process(COMMAND ${HARNESS} -max_total_time=${SECONDS} -timeout=60 -rss_limit_mb=4096
                        -artifact_prefix=${ARTIFACTS} -print_final_stats=1 ${WORK} ${dirs}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${HARNESS} failed (exit ${rc}); the input that failed is in ${ARTIFACTS}")
endif()
