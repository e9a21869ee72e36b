# Builds netwatcher probe plugins and sinks, and registers their tests. A
# plugin or sink is its folder: its CMakeLists.txt is one call below, and the
# top level finds the folder (plugins/*/CMakeLists.txt, sinks/*/CMakeLists.txt).
#
#   netwatcher_add_probe_plugin(<name>
#     [SOURCES <file>...]
#     [LIBRARIES <lib>...]
#     [UNIT_TESTS <file>...]
#     [INTEGRATION_TESTS <file>...]
#     [FALLBACK_SUITES <suite>...]
#     [TEST_LIBRARIES <lib>...]
#     [FUZZ <target> <source> <corpus-dir> [<target> <source> <corpus-dir>]...])
#
#   In the calling folder: <name>.bpf.c (absent for a protocol plugin on the
#   shared L7 capture, see netwatcher/l7_protocol.hpp) and plugin.cpp, optionally <name>.h
#   (records shared by the BPF program and plugin.cpp; any header the BPF
#   program includes is tracked through the compiler's depfile, so none is
#   required). Compiles the BPF object with clang (-target bpf, CO-RE against
#   a vmlinux.h generated once from NETWATCHER_BTF), generates the libbpf
#   skeleton <name>.skel.h, and links the MODULE library netwatcher-<name>.so
#   with hidden visibility into NETWATCHER_PLUGIN_OUTPUT_DIR (default:
#   <build>/plugins). `cmake --install` puts it in NETWATCHER_PLUGIN_INSTALL_DIR
#   (default lib/netwatcher under the install prefix, where an installed host
#   looks; empty: not installed, as for the tree's test fixtures).
#
#   SOURCES      C++ files besides plugin.cpp (parsers, name tables). They are
#                compiled once, linked into the plugin whole and, as an
#                archive, into its tests; the fuzz targets compile them again
#                with clang++. Keep plugin.cpp (which exports the plugin) free
#                of anything a test needs.
#   LIBRARIES    linked into the plugin (and into its tests; plain names such
#                as `elf` also into its fuzz targets, as -l<name>).
#   UNIT_TESTS   GoogleTest sources, built into the one unit-test executable
#                (ctest names unit.<Suite>.<Test>; no root, no kernel needed
#                unless the test says so). They may include the plugin's own
#                headers, <name>.skel.h, fake_host.hpp / fake_kernel.hpp
#                (tests/unit) and test_support.hpp (tests/support).
#   INTEGRATION_TESTS
#                GoogleTest sources, built into the one integration-test
#                executable (ctest names integration.<Suite>.<Test>; root, run
#                one at a time); they include harness.hpp (tests/integration).
#   FALLBACK_SUITES
#                GoogleTest suites of INTEGRATION_TESTS that run a second time
#                with every hook on its fallback candidate, as
#                fallback.<Suite>.<Test> (NW_TEST_HOOKS=fallback).
#   TEST_LIBRARIES
#                what only the tests link (e.g. ZLIB::ZLIB to inflate a
#                response); names resolve in the calling folder.
#   FUZZ         libFuzzer targets, three words each: the target name, its
#                source (defining LLVMFuzzerTestOneInput) and the folder of
#                checked-in seeds. Built with clang++ and ASan/UBSan from the
#                source, the plugin's SOURCES and the SDK's user-space sources
#                into <build>/<folder>/fuzz_<target>, and run for 15 s in
#                every ctest run as fuzz.<target>; longer runs with
#                bench/fuzz.sh.
#
#   Every test source gets NW_TEST_DIR, the folder it lives in (for the
#   scripts next to it), besides the NW_BINARY, NW_PLUGIN_DIR,
#   NW_FIXTURE_DIR and NW_SOURCE_DIR that every test has.
#
#   netwatcher_add_sink(<name> SOURCES <file>... [LIBRARIES <lib>...]
#                       [UNIT_TESTS <file>...] [INTEGRATION_TESTS <file>...]
#                       [TEST_LIBRARIES <lib>...])
#     The same minus the BPF part: netwatcher-sink-<name>.so from SOURCES
#     (which here include the file that exports the sink). A sink's tests get
#     its folder on the include path and its LIBRARIES, not its SOURCES: put
#     what a test needs in a library of the sink's own (the prometheus
#     endpoint). Sinks have no FUZZ or FALLBACK_SUITES.
#
# The test arguments only register sources and suites in global properties
# (NETWATCHER_UNIT_TEST_SOURCES, NETWATCHER_INTEGRATION_TEST_SOURCES,
# NETWATCHER_TEST_LIBRARIES, NETWATCHER_FALLBACK_SUITES, plus
# NETWATCHER_PROBE_PLUGIN_TARGETS and NETWATCHER_SINK_TARGETS); tests/CMakeLists.txt,
# added after every plugin and sink folder, builds the executables from them.
# Outside the netwatcher tree (find_package(netwatcher), see
# cmake/netwatcher-config.cmake.in and docs/writing-a-plugin.md) the same
# calls build the plugin; nothing there consumes its test arguments.

include_guard(GLOBAL)

find_program(NETWATCHER_CLANG NAMES clang clang-14 REQUIRED)
find_program(NETWATCHER_BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

set(NETWATCHER_BTF "/sys/kernel/btf/vmlinux" CACHE FILEPATH
    "Kernel BTF that vmlinux.h is generated from")
if(NOT DEFINED NETWATCHER_PLUGIN_OUTPUT_DIR)
  set(NETWATCHER_PLUGIN_OUTPUT_DIR "${CMAKE_BINARY_DIR}/plugins")
endif()
if(NOT DEFINED NETWATCHER_PLUGIN_INSTALL_DIR)
  set(NETWATCHER_PLUGIN_INSTALL_DIR "lib/netwatcher")
endif()

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(NETWATCHER_BPF_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  set(NETWATCHER_BPF_ARCH arm64)
else()
  set(NETWATCHER_BPF_ARCH ${CMAKE_SYSTEM_PROCESSOR})
endif()

# The SDK headers: an installed package says where it put them; from a
# source tree they sit next to this file.
if(NOT DEFINED NETWATCHER_SDK_INCLUDE_DIR)
  get_filename_component(NETWATCHER_SOURCE_ROOT "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
  set(NETWATCHER_SDK_INCLUDE_DIR "${NETWATCHER_SOURCE_ROOT}/core/include")
endif()
set(NETWATCHER_BPF_INCLUDE_DIR "${CMAKE_BINARY_DIR}/bpf-include")
set(NETWATCHER_VMLINUX_H "${NETWATCHER_BPF_INCLUDE_DIR}/vmlinux.h")
file(GLOB NETWATCHER_BPF_SDK_HEADERS "${NETWATCHER_SDK_INCLUDE_DIR}/netwatcher/bpf/*.h")

# One vmlinux.h for every plugin; regenerated only when the BTF path changes.
add_custom_command(
  OUTPUT "${NETWATCHER_VMLINUX_H}"
  COMMAND ${CMAKE_COMMAND} -E make_directory "${NETWATCHER_BPF_INCLUDE_DIR}"
  COMMAND sh -c "'${NETWATCHER_BPFTOOL}' btf dump file '${NETWATCHER_BTF}' format c > '${NETWATCHER_VMLINUX_H}.tmp' && mv '${NETWATCHER_VMLINUX_H}.tmp' '${NETWATCHER_VMLINUX_H}'"
  COMMENT "Generating vmlinux.h from ${NETWATCHER_BTF}"
  VERBATIM)
add_custom_target(netwatcher_vmlinux_h DEPENDS "${NETWATCHER_VMLINUX_H}")

# libFuzzer needs clang++ whatever compiles the rest.
if(NETWATCHER_BUILD_TESTS AND NETWATCHER_BUILD_FUZZ)
  find_program(NETWATCHER_CLANGXX NAMES clang++ clang++-14)
  if(NOT NETWATCHER_CLANGXX)
    if(DEFINED ENV{CI})
      message(FATAL_ERROR "clang++ (libFuzzer) is required to build the fuzz targets in CI")
    endif()
    message(STATUS "fuzz targets not built: no clang++")
  endif()
elseif(NETWATCHER_BUILD_TESTS)
  message(STATUS "fuzz targets not built (NETWATCHER_BUILD_FUZZ=OFF)")
endif()

function(_netwatcher_module_defaults target output_name)
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "${output_name}"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY "${NETWATCHER_PLUGIN_OUTPUT_DIR}")
  if(NETWATCHER_PLUGIN_INSTALL_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION "${NETWATCHER_PLUGIN_INSTALL_DIR}")
  endif()
  target_compile_features(${target} PRIVATE cxx_std_20)
  target_link_libraries(${target} PRIVATE netwatcher::sdk)
  # Out of the tree the SDK archives may carry the tree's sanitizer; the
  # plugin must then link its runtime (in the tree add_link_options did).
  if(NETWATCHER_SDK_SANITIZE AND NOT NETWATCHER_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${NETWATCHER_SDK_SANITIZE})
    target_link_options(${target} PRIVATE -fsanitize=${NETWATCHER_SDK_SANITIZE})
  endif()
  # clang links a sanitizer runtime into executables only; a module leaves its
  # __asan_*/__tsan_* symbols to the host, which --no-undefined would refuse.
  if(NOT ((NETWATCHER_SANITIZE OR NETWATCHER_SDK_SANITIZE) AND CMAKE_CXX_COMPILER_ID MATCHES "Clang"))
    target_link_options(${target} PRIVATE -Wl,--no-undefined)
  endif()
endfunction()

# libFuzzer target fuzz_<target> from <source> plus `extra` sources, and its
# 15 s smoke test fuzz.<target>, which writes new inputs to a scratch corpus
# in the build tree and leaves the seeds in <corpus> untouched.
function(_netwatcher_add_fuzz target source corpus include_dirs extra)
  if(NOT NETWATCHER_CLANGXX OR NOT TARGET netwatcher_sdk)
    return()
  endif()
  get_filename_component(source "${source}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  get_filename_component(corpus "${corpus}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  # The SDK's user-space part (no libbpf), from its own target's sources.
  get_target_property(sdk_dir netwatcher_sdk SOURCE_DIR)
  get_target_property(sdk_sources netwatcher_sdk SOURCES)
  list(TRANSFORM sdk_sources PREPEND "${sdk_dir}/")
  set(sources "${source}" ${extra} ${sdk_sources})
  set(includes -I${NETWATCHER_SDK_INCLUDE_DIR})
  foreach(dir IN LISTS include_dirs)
    list(APPEND includes -I${dir})
  endforeach()
  file(GLOB_RECURSE sdk_headers "${NETWATCHER_SDK_INCLUDE_DIR}/netwatcher/*.hpp")
  file(GLOB local_headers "${CMAKE_CURRENT_SOURCE_DIR}/*.hpp" "${CMAKE_CURRENT_SOURCE_DIR}/*.h")
  set(binary "${CMAKE_CURRENT_BINARY_DIR}/fuzz_${target}")
  add_custom_command(
    OUTPUT "${binary}"
    COMMAND ${NETWATCHER_CLANGXX} -std=c++20 -O1 -g -fno-omit-frame-pointer
            -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
            -DBOOST_DLL_USE_STD_FS ${includes} ${sources} ${_netwatcher_fuzz_link} -o "${binary}"
    DEPENDS ${sources} ${sdk_headers} ${local_headers}
    COMMENT "libFuzzer target fuzz_${target}"
    VERBATIM)
  add_custom_target(fuzz_${target} ALL DEPENDS "${binary}")
  add_test(NAME fuzz.${target}
           COMMAND sh -c "mkdir -p fuzz-corpus-${target} && exec '${binary}' -max_total_time=15 -rss_limit_mb=1024 -print_final_stats=1 fuzz-corpus-${target} '${corpus}'")
  set_tests_properties(fuzz.${target} PROPERTIES TIMEOUT 120)
endfunction()

# Records one plugin's or sink's tests for tests/CMakeLists.txt. `libraries`
# are linked into the tests through an INTERFACE target made here, so that
# names (imported targets found in this folder) resolve in this folder.
function(_netwatcher_register_tests name kind libraries fuzz_extra)
  cmake_parse_arguments(ARG "" "" "UNIT_TESTS;INTEGRATION_TESTS;FALLBACK_SUITES;FUZZ" ${ARGN})
  if(NOT NETWATCHER_BUILD_TESTS)
    return()
  endif()
  if(ARG_UNIT_TESTS OR ARG_INTEGRATION_TESTS)
    set(deps netwatcher_${kind}_${name}_test_deps)
    add_library(${deps} INTERFACE)
    target_include_directories(${deps} INTERFACE "${CMAKE_CURRENT_SOURCE_DIR}"
                                                 "${CMAKE_CURRENT_BINARY_DIR}")
    target_link_libraries(${deps} INTERFACE ${libraries})
    set_property(GLOBAL APPEND PROPERTY NETWATCHER_TEST_LIBRARIES ${deps})
  endif()
  foreach(kind_of_test UNIT INTEGRATION)
    foreach(file IN LISTS ARG_${kind_of_test}_TESTS)
      get_filename_component(file "${file}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
      set_property(GLOBAL APPEND PROPERTY NETWATCHER_${kind_of_test}_TEST_SOURCES "${file}")
    endforeach()
  endforeach()
  set_property(GLOBAL APPEND PROPERTY NETWATCHER_FALLBACK_SUITES ${ARG_FALLBACK_SUITES})

  list(LENGTH ARG_FUZZ fuzz_words)
  math(EXPR fuzz_rest "${fuzz_words} % 3")
  if(NOT fuzz_rest EQUAL 0)
    message(FATAL_ERROR "${name}: FUZZ takes three words per target: <target> <source> <corpus-dir>")
  endif()
  if(NETWATCHER_BUILD_FUZZ AND fuzz_words GREATER 0)
    math(EXPR last "${fuzz_words} - 1")
    foreach(i RANGE 0 ${last} 3)
      math(EXPR s "${i} + 1")
      math(EXPR c "${i} + 2")
      list(GET ARG_FUZZ ${i} target)
      list(GET ARG_FUZZ ${s} source)
      list(GET ARG_FUZZ ${c} corpus)
      _netwatcher_add_fuzz(${target} "${source}" "${corpus}" "${CMAKE_CURRENT_SOURCE_DIR}"
                           "${fuzz_extra}")
    endforeach()
  endif()
endfunction()

set(_NETWATCHER_TEST_KEYWORDS UNIT_TESTS INTEGRATION_TESTS FALLBACK_SUITES TEST_LIBRARIES FUZZ)

function(netwatcher_add_probe_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES;${_NETWATCHER_TEST_KEYWORDS}" ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "netwatcher_add_probe_plugin(${name}): unknown arguments ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  set(target netwatcher_plugin_${name})
  add_library(${target} MODULE plugin.cpp)
  target_include_directories(${target} PRIVATE "${CMAKE_CURRENT_BINARY_DIR}"
                                               "${CMAKE_CURRENT_SOURCE_DIR}")
  target_link_libraries(${target} PRIVATE netwatcher::sdk_kernel ${ARG_LIBRARIES})
  _netwatcher_module_defaults(${target} "netwatcher-${name}")
  # A protocol plugin (on the shared L7 capture) has no BPF program.
  set(bpf_target "")
  if(EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${name}.bpf.c")
    set(src "${CMAKE_CURRENT_SOURCE_DIR}/${name}.bpf.c")
    set(obj "${CMAKE_CURRENT_BINARY_DIR}/${name}.bpf.o")
    set(dep "${CMAKE_CURRENT_BINARY_DIR}/${name}.bpf.d")
    set(linked "${CMAKE_CURRENT_BINARY_DIR}/${name}.linked.bpf.o")
    set(skel "${CMAKE_CURRENT_BINARY_DIR}/${name}.skel.h")
    add_custom_command(
      OUTPUT "${skel}"
      COMMAND "${NETWATCHER_CLANG}" -g -O2 -target bpf -D__TARGET_ARCH_${NETWATCHER_BPF_ARCH}
              -Wall -Wno-unused-function -Werror
              -I "${NETWATCHER_BPF_INCLUDE_DIR}" -I "${NETWATCHER_SDK_INCLUDE_DIR}"
              -I "${CMAKE_CURRENT_SOURCE_DIR}"
              -MD -MT "${skel}" -MF "${dep}"
              -c "${src}" -o "${obj}"
      # gen object drops DWARF but keeps BTF, so the embedded object stays small.
      COMMAND "${NETWATCHER_BPFTOOL}" gen object "${linked}" "${obj}"
      COMMAND sh -c "'${NETWATCHER_BPFTOOL}' gen skeleton '${linked}' name ${name}_bpf > '${skel}.tmp' && mv '${skel}.tmp' '${skel}'"
      # The depfile covers <name>.h and whatever else the program includes.
      DEPFILE "${dep}"
      DEPENDS "${src}" ${NETWATCHER_BPF_SDK_HEADERS} netwatcher_vmlinux_h "${NETWATCHER_VMLINUX_H}"
      COMMENT "Building BPF object and skeleton for plugin ${name}"
      VERBATIM)
    set(bpf_target netwatcher_${name}_bpf)
    add_custom_target(${bpf_target} DEPENDS "${skel}")
    add_dependencies(${target} ${bpf_target})
  endif()
  set(test_libraries ${ARG_LIBRARIES} ${ARG_TEST_LIBRARIES} netwatcher::sdk_kernel)
  # The fuzz targets are linked by hand (clang++, not a CMake target).
  set(_netwatcher_fuzz_link "")
  foreach(library IN LISTS ARG_LIBRARIES)
    if(library MATCHES "^[A-Za-z0-9_+-]+$" AND NOT TARGET ${library})
      list(APPEND _netwatcher_fuzz_link "-l${library}")
    endif()
  endforeach()

  # Everything but plugin.cpp, compiled once: every object goes into the
  # plugin, as plugin.cpp's own does; the tests link an archive of them.
  if(ARG_SOURCES)
    set(objects netwatcher_${name}_objects)
    add_library(${objects} OBJECT ${ARG_SOURCES})
    if(bpf_target)
      add_dependencies(${objects} ${bpf_target})
    endif()
    set_target_properties(${objects} PROPERTIES POSITION_INDEPENDENT_CODE ON
                          CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
    target_compile_features(${objects} PUBLIC cxx_std_20)
    target_include_directories(${objects} PUBLIC "${CMAKE_CURRENT_SOURCE_DIR}"
                                                 "${CMAKE_CURRENT_BINARY_DIR}")
    target_link_libraries(${objects} PUBLIC netwatcher::sdk_kernel ${ARG_LIBRARIES})
    target_link_libraries(${target} PRIVATE ${objects})
    if(NETWATCHER_BUILD_TESTS)
      set(parts netwatcher_${name}_parts)
      add_library(${parts} STATIC $<TARGET_OBJECTS:${objects}>)
      target_link_libraries(${parts} INTERFACE ${objects})
      list(APPEND test_libraries ${parts})
    endif()
    list(TRANSFORM ARG_SOURCES PREPEND "${CMAKE_CURRENT_SOURCE_DIR}/" REGEX "^[^/]")
  endif()

  set_property(GLOBAL APPEND PROPERTY NETWATCHER_PROBE_PLUGIN_TARGETS ${target})
  _netwatcher_register_tests(${name} plugin "${test_libraries}" "${ARG_SOURCES}" UNIT_TESTS ${ARG_UNIT_TESTS}
                             INTEGRATION_TESTS ${ARG_INTEGRATION_TESTS}
                             FALLBACK_SUITES ${ARG_FALLBACK_SUITES} FUZZ ${ARG_FUZZ})
endfunction()

function(netwatcher_add_sink name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES;UNIT_TESTS;INTEGRATION_TESTS;TEST_LIBRARIES"
                        ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "netwatcher_add_sink(${name}): unknown arguments ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  set(target netwatcher_sink_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_include_directories(${target} PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}")
  target_link_libraries(${target} PRIVATE ${ARG_LIBRARIES})
  _netwatcher_module_defaults(${target} "netwatcher-sink-${name}")
  set_property(GLOBAL APPEND PROPERTY NETWATCHER_SINK_TARGETS ${target})
  _netwatcher_register_tests(${name} sink "${ARG_LIBRARIES};${ARG_TEST_LIBRARIES};netwatcher::sdk"
                             "" UNIT_TESTS ${ARG_UNIT_TESTS}
                             INTEGRATION_TESTS ${ARG_INTEGRATION_TESTS})
endfunction()
