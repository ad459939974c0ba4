# Benchmark harness (issue 5): pd-bench, the measuring tool that
# bench/bench.sh drives, and a smoke test of the quick mode. The numbers
# are judged by `make bench`, never by a test: bench_quick only checks that
# the harness starts everything, measures, prints its table and cleans up.
add_executable(pd-bench bench/pd_bench.c bench/bench_util.c bench/bench_nats.c
               bench/bench_pd.c bench/bench_flood.c bench/bench_stub.c bench/bench_model.c
               bench/bench_batch.c bench/bench_notes.c
               node/inbox.c node/natsout.c)
# node/inbox.c, node/natsout.c: the stub node hands messages to its loop and
# publishes exactly as presenced does.
target_include_directories(pd-bench PRIVATE bench node)
target_compile_options(pd-bench PRIVATE ${PD_WARNINGS})
target_link_libraries(pd-bench PRIVATE pdcommon PkgConfig::NATS PkgConfig::UV Threads::Threads)

if(PD_TESTS)
  add_test(NAME bench_quick
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/bench/bench.sh --quick
                   --build ${CMAKE_BINARY_DIR} --out ${CMAKE_BINARY_DIR}/bench-quick)
  set_tests_properties(bench_quick PROPERTIES LABELS "bench" TIMEOUT 600)
endif()

# The regression guard's own judgement (make bench-check compares a fresh
# quick run's ratios with bench/results/latest.json): checked on made-up
# results, so it depends on no machine's speed.
if(PD_TESTS)
  add_test(NAME bench_check_test
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/tests/bench_check_test.py)
  set_tests_properties(bench_check_test PROPERTIES LABELS "unit" TIMEOUT 60)
endif()
