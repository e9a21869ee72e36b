# Builds netwatcher probe plugins and sinks.
#
#   netwatcher_add_probe_plugin(<name> [SOURCES extra.cpp ...])
#     Expects plugins/<name>/<name>.bpf.c and plugin.cpp in the calling folder.
#     Compiles the BPF object with clang (-target bpf, CO-RE against a vmlinux.h
#     generated once from NETWATCHER_BTF), generates the libbpf skeleton
#     <name>.skel.h, and links a MODULE library netwatcher-<name>.so with hidden
#     visibility into NETWATCHER_PLUGIN_OUTPUT_DIR.
#
#   netwatcher_add_sink(<name> SOURCES a.cpp ...)
#     The same minus the BPF part: netwatcher-sink-<name>.so.

find_program(NETWATCHER_CLANG NAMES clang clang-14 REQUIRED)
find_program(NETWATCHER_BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(NETWATCHER_BPF_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  set(NETWATCHER_BPF_ARCH arm64)
else()
  set(NETWATCHER_BPF_ARCH ${CMAKE_SYSTEM_PROCESSOR})
endif()

set(NETWATCHER_BPF_INCLUDE_DIR "${CMAKE_BINARY_DIR}/bpf-include")
set(NETWATCHER_VMLINUX_H "${NETWATCHER_BPF_INCLUDE_DIR}/vmlinux.h")
set(NETWATCHER_SDK_INCLUDE_DIR "${CMAKE_SOURCE_DIR}/core/include")
file(GLOB NETWATCHER_BPF_SDK_HEADERS "${NETWATCHER_SDK_INCLUDE_DIR}/netwatcher/bpf/*.h")

# One vmlinux.h for every plugin; regenerated only when the BTF path changes.
add_custom_command(
  OUTPUT "${NETWATCHER_VMLINUX_H}"
  COMMAND ${CMAKE_COMMAND} -E make_directory "${NETWATCHER_BPF_INCLUDE_DIR}"
  COMMAND sh -c "'${NETWATCHER_BPFTOOL}' btf dump file '${NETWATCHER_BTF}' format c > '${NETWATCHER_VMLINUX_H}.tmp' && mv '${NETWATCHER_VMLINUX_H}.tmp' '${NETWATCHER_VMLINUX_H}'"
  COMMENT "Generating vmlinux.h from ${NETWATCHER_BTF}"
  VERBATIM)
add_custom_target(netwatcher_vmlinux_h DEPENDS "${NETWATCHER_VMLINUX_H}")

function(_netwatcher_module_defaults target output_name)
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "${output_name}"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY "${NETWATCHER_PLUGIN_OUTPUT_DIR}")
  target_link_libraries(${target} PRIVATE netwatcher::sdk)
  # clang links a sanitizer runtime into executables only; a module leaves its
  # __asan_*/__tsan_* symbols to the host, which --no-undefined would refuse.
  if(NOT (NETWATCHER_SANITIZE AND CMAKE_CXX_COMPILER_ID MATCHES "Clang"))
    target_link_options(${target} PRIVATE -Wl,--no-undefined)
  endif()
endfunction()

function(netwatcher_add_probe_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES" ${ARGN})
  set(src "${CMAKE_CURRENT_SOURCE_DIR}/${name}.bpf.c")
  set(obj "${CMAKE_CURRENT_BINARY_DIR}/${name}.bpf.o")
  set(linked "${CMAKE_CURRENT_BINARY_DIR}/${name}.linked.bpf.o")
  set(skel "${CMAKE_CURRENT_BINARY_DIR}/${name}.skel.h")
  add_custom_command(
    OUTPUT "${skel}"
    COMMAND "${NETWATCHER_CLANG}" -g -O2 -target bpf -D__TARGET_ARCH_${NETWATCHER_BPF_ARCH}
            -Wall -Wno-unused-function -Werror
            -I "${NETWATCHER_BPF_INCLUDE_DIR}" -I "${NETWATCHER_SDK_INCLUDE_DIR}"
            -I "${CMAKE_CURRENT_SOURCE_DIR}"
            -c "${src}" -o "${obj}"
    # gen object drops DWARF but keeps BTF, so the embedded object stays small.
    COMMAND "${NETWATCHER_BPFTOOL}" gen object "${linked}" "${obj}"
    COMMAND sh -c "'${NETWATCHER_BPFTOOL}' gen skeleton '${linked}' name ${name}_bpf > '${skel}.tmp' && mv '${skel}.tmp' '${skel}'"
    DEPENDS "${src}" "${CMAKE_CURRENT_SOURCE_DIR}/${name}.h" ${NETWATCHER_BPF_SDK_HEADERS}
            netwatcher_vmlinux_h "${NETWATCHER_VMLINUX_H}"
    COMMENT "Building BPF object and skeleton for plugin ${name}"
    VERBATIM)

  set(target netwatcher_plugin_${name})
  add_library(${target} MODULE plugin.cpp ${ARG_SOURCES} "${skel}")
  target_include_directories(${target} PRIVATE "${CMAKE_CURRENT_BINARY_DIR}"
                                               "${CMAKE_CURRENT_SOURCE_DIR}")
  target_link_libraries(${target} PRIVATE netwatcher::sdk_kernel)
  _netwatcher_module_defaults(${target} "netwatcher-${name}")
endfunction()

function(netwatcher_add_sink name)
  cmake_parse_arguments(ARG "" "" "SOURCES" ${ARGN})
  set(target netwatcher_sink_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_include_directories(${target} PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}")
  _netwatcher_module_defaults(${target} "netwatcher-sink-${name}")
endfunction()
