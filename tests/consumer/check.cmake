# cmake -P script: install keel from KEEL_BUILD_DIR into a scratch prefix, then
# configure, build and run the consumer project against that prefix only.
file(REMOVE_RECURSE ${KEEL_SCRATCH})
set(prefix ${KEEL_SCRATCH}/prefix)
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install ${KEEL_BUILD_DIR} --prefix ${prefix})
run(${CMAKE_COMMAND} -S ${KEEL_CONSUMER_SRC} -B ${KEEL_SCRATCH}/build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_BUILD_TYPE=${KEEL_BUILD_TYPE} -DKEEL_SANITIZE=${KEEL_SANITIZE})
run(${CMAKE_COMMAND} --build ${KEEL_SCRATCH}/build)
run(${KEEL_SCRATCH}/build/consumer)
