# Test helpers. Every test is labelled (unit, mpi, e2e, slurm, gpu); a test that cannot run
# here (e.g. no GPU) exits 77 and CTest reports it as skipped, never as passed.
set(KMIM_TEST_ENV
  "OMPI_ALLOW_RUN_AS_ROOT=1" "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
  "OMPI_MCA_rmaps_base_oversubscribe=1" "OMPI_MCA_btl_vader_single_copy_mechanism=none"
  "HDF5_USE_FILE_LOCKING=FALSE" "OMP_WAIT_POLICY=PASSIVE" "KMIM_BIN_DIR=${CMAKE_BINARY_DIR}/bin"
  "KMIM_SOURCE_DIR=${CMAKE_SOURCE_DIR}" "KMIM_BUILD_DIR=${CMAKE_BINARY_DIR}")

# kmim_add_boost_test(NAME n SOURCES s... [LIBS l...] [LABELS l...] [MPI_RANKS 2 3] [TIMEOUT s])
# Builds one Boost.Test executable. With MPI_RANKS it is run through real mpirun once per
# rank count (label mpi added); without, it runs directly.
function(kmim_add_boost_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;MPI_RANKS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} Boost::unit_test_framework)
  target_compile_definitions(${T_NAME} PRIVATE BOOST_TEST_DYN_LINK)
  kmim_set_warnings(${T_NAME})
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  if(T_MPI_RANKS)
    foreach(np IN LISTS T_MPI_RANKS)
      add_test(NAME ${T_NAME}_np${np}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} --oversubscribe
                       $<TARGET_FILE:${T_NAME}>)
      set_tests_properties(${T_NAME}_np${np} PROPERTIES LABELS "mpi;${T_LABELS}"
        ENVIRONMENT "${KMIM_TEST_ENV}" TIMEOUT ${T_TIMEOUT} SKIP_RETURN_CODE 77 PROCESSORS 2)
    endforeach()
  else()
    add_test(NAME ${T_NAME} COMMAND ${T_NAME})
    set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}"
      ENVIRONMENT "${KMIM_TEST_ENV}" TIMEOUT ${T_TIMEOUT} SKIP_RETURN_CODE 77)
  endif()
endfunction()

# kmim_add_script_test(NAME n SCRIPT path [LABELS l...] [TIMEOUT s])
# Runs a bash script (e2e tests that drive the real programs). The script sees KMIM_BIN_DIR,
# KMIM_SOURCE_DIR, KMIM_BUILD_DIR and a private scratch folder KMIM_TEST_TMP.
function(kmim_add_script_test)
  cmake_parse_arguments(T "" "NAME;SCRIPT;TIMEOUT" "LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  add_test(NAME ${T_NAME} COMMAND bash ${T_SCRIPT})
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    SKIP_RETURN_CODE 77
    ENVIRONMENT "${KMIM_TEST_ENV};KMIM_TEST_TMP=${CMAKE_BINARY_DIR}/test_tmp/${T_NAME}")
endfunction()
