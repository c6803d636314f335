# cmake -P script: build the .deb from KEEL_BUILD_DIR with CPack (what
# `make package` does), unpack it into a scratch root with dpkg-deb -x, then
# build and run the consumer project against that root only: once through
# find_package(keel) and once through pkg-config (keel.pc).
#
# Sanitizer builds skip it: it tests packaging, and a .deb of an
# instrumented library is not something anyone ships; the install tree is
# still checked there by install.consumer_project.
if(KEEL_SANITIZE)
  message("package test skipped: KEEL_SANITIZE=${KEEL_SANITIZE} (packaging is tested in debug/release)")
  return()
endif()
foreach(tool dpkg-deb pkg-config)
  find_program(found_${tool} ${tool})
  if(NOT found_${tool})
    message("package test skipped: ${tool} not installed (scripts/install-deps.sh)")
    return()
  endif()
endforeach()
file(REMOVE_RECURSE ${KEEL_SCRATCH})
set(root ${KEEL_SCRATCH}/root)
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}")
  endif()
endfunction()

run(${CMAKE_CPACK_COMMAND} --config ${KEEL_BUILD_DIR}/CPackConfig.cmake -G DEB -B ${KEEL_SCRATCH}/deb)
file(GLOB debs ${KEEL_SCRATCH}/deb/*.deb)
list(LENGTH debs n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "expected one .deb in ${KEEL_SCRATCH}/deb, found: ${debs}")
endif()
run(dpkg-deb -x ${debs} ${root})
file(GLOB_RECURSE pcs ${root}/usr/*/keel.pc)
list(LENGTH pcs n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "expected one keel.pc in the package, found: ${pcs}")
endif()
foreach(must include/keel/core/EventLoop.h include/keel/net/Server.h)
  if(NOT EXISTS ${root}/usr/${must})
    message(FATAL_ERROR "the package lacks /usr/${must}")
  endif()
endforeach()
file(GLOB_RECURSE internal ${root}/usr/include/keel/*/internal/*)
if(internal)
  message(FATAL_ERROR "internal headers packaged: ${internal}")
endif()

# 1. find_package, with the unpacked /usr as the only prefix.
run(${CMAKE_COMMAND} -S ${KEEL_CONSUMER_SRC} -B ${KEEL_SCRATCH}/cmake-build
    -DCMAKE_PREFIX_PATH=${root}/usr -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_BUILD_TYPE=${KEEL_BUILD_TYPE})
run(${CMAKE_COMMAND} --build ${KEEL_SCRATCH}/cmake-build)
run(${KEEL_SCRATCH}/cmake-build/consumer)

# 2. pkg-config, as a Makefile would use it: keel.pc's prefix is /usr, so it
# is pointed at the scratch root; spdlog and OpenSSL come from the system.
get_filename_component(pcdir ${pcs} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pcdir})
execute_process(COMMAND pkg-config --define-variable=prefix=${root}/usr --cflags --libs keel
                OUTPUT_VARIABLE flags OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config --cflags --libs keel failed (${rc})")
endif()
message("pkg-config keel: ${flags}")
if(NOT flags MATCHES "-I${root}/usr/include" OR NOT flags MATCHES "-lkeel")
  message(FATAL_ERROR "keel.pc does not point into the package: ${flags}")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
run(${KEEL_CXX} -std=c++20 ${KEEL_CONSUMER_SRC}/main.cc -o ${KEEL_SCRATCH}/consumer-pc ${flags})
run(${KEEL_SCRATCH}/consumer-pc)
