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
