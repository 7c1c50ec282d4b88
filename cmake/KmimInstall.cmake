# cmake --install: programs, job scripts, docs, and a find_package(kmim) config for the library.
include(CMakePackageConfigHelpers)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/jobs/ DESTINATION ${CMAKE_INSTALL_DATADIR}/kmim/jobs
        USE_SOURCE_PERMISSIONS)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${CMAKE_SOURCE_DIR}/src/kmim/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kmim
        FILES_MATCHING PATTERN "*.hpp")
install(EXPORT kmimTargets NAMESPACE kmim:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kmim)
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/kmimConfig.cmake.in
  ${CMAKE_BINARY_DIR}/kmimConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kmim)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/kmimConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/kmimConfig.cmake ${CMAKE_BINARY_DIR}/kmimConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kmim)
# Class lists the job scripts use (e.g. ImageNet-100 for jobs/pretrain_200ep_in100.sh).
install(DIRECTORY ${CMAKE_SOURCE_DIR}/data/ DESTINATION ${CMAKE_INSTALL_DATADIR}/kmim/data)
# The PyTorch → kmim checkpoint converter (DINO / DeiT / timm ViTs).
install(PROGRAMS ${CMAKE_SOURCE_DIR}/tools/convert_timm_vit.py DESTINATION ${CMAKE_INSTALL_BINDIR}
        RENAME kmim_convert_timm_vit)
