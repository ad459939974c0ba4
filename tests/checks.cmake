# checks.cmake - checks of files that are not C: compose.yaml, the Dockerfile
# and the deploy/ samples, against presenced --help, the Makefile,
# scripts/deps.sh and scripts/up.sh (no Docker engine needed). Included from
# tests/CMakeLists.txt. Needs /usr/bin/python3 with PyYAML (python3-yaml).
add_test(NAME compose_check
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/compose_check.py
                 $<TARGET_FILE:presenced>
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(compose_check PROPERTIES LABELS unit TIMEOUT 60)

# make up / make down leave no process behind (random ports, private state).
add_test(NAME updown_check
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/updown_check.sh ${CMAKE_BINARY_DIR}
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(updown_check PROPERTIES LABELS integration TIMEOUT 400)

# The chaos test, short (tests/chaos/chaos.py; `make chaos` runs 60 s): 20 s
# of load on three nodes, three clustered nats-servers and Redis under
# random faults, then every node's view against presence-sim's oracle. As
# root (CI) each nats-server + node pair runs in a network namespace of its
# own and partitions are among the faults; elsewhere it runs on loopback
# without them (the report says so). The seed is PD_SEED (make test: 1);
# PD_PRESENCED_BIN (make test-tsan) swaps the node binary.
# Without the watchers (--no-watch): what a watcher last heard is checked
# by make chaos, where the classes not covered yet (tests/chaos/watch.py,
# "What is left") show now and then; a landing must not wait on them.
add_test(NAME chaos_short
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/chaos/chaos.py --duration 20
                 --no-watch --bin-dir $<TARGET_FILE_DIR:presenced>)
set_tests_properties(chaos_short PROPERTIES LABELS integration TIMEOUT 240)

# presenced without sanitizers, under valgrind (memcheck), through a smoke
# workload (tests/valgrind_smoke.sh). The plain build is a separate tree,
# <build>/plain, built with this one (ExternalProject, rebuilt incrementally
# every time): the sanitizer flags of this tree apply to every target.
include(ExternalProject)
ExternalProject_Add(presenced_plain
  SOURCE_DIR ${CMAKE_SOURCE_DIR}
  BINARY_DIR ${CMAKE_BINARY_DIR}/plain
  CMAKE_ARGS -DCMAKE_BUILD_TYPE=Debug -DPD_ASAN=OFF -DPD_UBSAN=OFF -DPD_TSAN=OFF -DPD_TESTS=OFF
             -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER}
  BUILD_COMMAND ${CMAKE_COMMAND} --build <BINARY_DIR> --target presenced
  INSTALL_COMMAND ""
  BUILD_ALWAYS ON)
add_test(NAME valgrind_smoke
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/valgrind_smoke.sh
                 ${CMAKE_BINARY_DIR}/plain/presenced $<TARGET_FILE:presence-sim>
                 $<TARGET_FILE:presencectl>)
set_tests_properties(valgrind_smoke PROPERTIES LABELS valgrind TIMEOUT 300)

# Redis killed and restarted 40 times under a node writing a snapshot every
# 100 ms: snapshots must resume each time (a write or AUTH left unanswered
# by hiredis' libuv adapter is given up, node/persist.c redis_expired).
add_test(NAME redis_wedge
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/chaos/repro_redis_wedge.py
                 --bin-dir $<TARGET_FILE_DIR:presenced>)
set_tests_properties(redis_wedge PROPERTIES LABELS integration TIMEOUT 240)

# make install DESTDIR=... PREFIX=/usr of this build tree: binaries, man
# pages, bash completions, systemd unit (tests/install_check.sh).
add_test(NAME install_check
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/install_check.sh ${CMAKE_BINARY_DIR}
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(install_check PROPERTIES LABELS unit TIMEOUT 120)

# presence-dash in headless Chromium (tests/browser/dash_e2e.mjs): three
# nodes, the page, a notification, a lookup, a node killed, a screenshot
# (<build>/dashboard.png). Skipped (77) only where /usr/bin/chromium is
# missing; playwright-core from tests/browser/package-lock.json.
add_test(NAME dash_browser
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/browser/run.sh ${CMAKE_BINARY_DIR})
set_tests_properties(dash_browser PROPERTIES LABELS integration TIMEOUT 240 SKIP_RETURN_CODE 77)

# @presenced/client (clients/node) against a real cluster: types and
# exports, a batch with bad events, a 100k-connection sync in parts, a
# server moving between nodes, a watch during 1000 changes, failover after
# SIGKILL (clients/node/test/run.sh; npm ci from its package-lock.json).
# Skipped (77) only where node or npm is missing. PD_PRESENCED_BIN (make
# test-tsan) swaps the node binary.
add_test(NAME node_client
         COMMAND bash ${CMAKE_SOURCE_DIR}/clients/node/test/run.sh ${CMAKE_BINARY_DIR} client)
set_tests_properties(node_client PROPERTIES LABELS integration TIMEOUT 240 SKIP_RETURN_CODE 77)

# The example chat server (examples/chat/server.js) against a real cluster,
# scripted through two WebSocket clients: bob sees alice online, then
# offline once her tab closes (the same runner; npm ci in examples/chat).
add_test(NAME example_chat
         COMMAND bash ${CMAKE_SOURCE_DIR}/clients/node/test/run.sh ${CMAKE_BINARY_DIR} chat)
set_tests_properties(example_chat PROPERTIES LABELS integration TIMEOUT 180 SKIP_RETURN_CODE 77)

# presence-dash against garbage on the subjects it reads and hostile HTTP
# (tests/dash_hostile.py): it keeps serving, shows nothing false, exits 0.
add_test(NAME dash_hostile
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/dash_hostile.py ${CMAKE_BINARY_DIR})
set_tests_properties(dash_hostile PROPERTIES LABELS integration TIMEOUT 120)

# Real network partitions (tests/partition/): three network namespaces,
# links cut and healed for real; a minority split, a three-way split and a
# flapping link, each ending with every answer and every watcher's last
# notification equal to the truth. Skipped (exit 77, with the reason) where
# namespaces cannot be made (not root, no iproute2).
add_test(NAME it_partition
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/partition/partition.py
                 --bin-dir $<TARGET_FILE_DIR:presenced>)
set_tests_properties(it_partition PROPERTIES LABELS integration TIMEOUT 400
                     SKIP_RETURN_CODE 77)

# compose.yaml and the Dockerfile run for real with Debian's podman and
# podman-compose (tests/compose/compose_test.py, docs/compose.md): images
# built locally (cached between runs), the cluster checked from the host
# through the published ports, torn down whatever happens. Skipped, with the
# reason, where podman cannot run (not root, podman missing). Its own label:
# it uses no host-built presenced, so make test-tsan (-L integration) leaves
# it out. COST: the longest test on a fresh machine (the first image build),
# so ctest starts it first.
add_test(NAME compose_test
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/compose/compose_test.py
                 --ctl $<TARGET_FILE:presencectl> --deadline 1380
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(compose_test PROPERTIES LABELS compose TIMEOUT 1500
                     SKIP_RETURN_CODE 77 COST 10000)
