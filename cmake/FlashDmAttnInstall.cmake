# `cmake --install`: libflash_dmattn and flash_dmattn.h, with what lets an engine find them: the exported target
# FlashDmAttn::flash_dmattn for find_package(FlashDmAttn CONFIG), a version file, and flash_dmattn.pc for pkg-config.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(fdma_config_dir "${CMAKE_INSTALL_LIBDIR}/cmake/FlashDmAttn")

# The imported target carries the CUDA facts of the build: machine code for CUDA_ARCHITECTURES, and a CUDA runtime
# linked in statically (CUDA_RUNTIME_LIBRARY), so a consumer links no cudart for the library's sake.
set_property(TARGET flash_dmattn PROPERTY EXPORT_PROPERTIES CUDA_ARCHITECTURES CUDA_RUNTIME_LIBRARY)
install(TARGETS flash_dmattn EXPORT FlashDmAttnTargets
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}"
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(FILES native/include/flash_dmattn.h DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT FlashDmAttnTargets NAMESPACE FlashDmAttn:: DESTINATION "${fdma_config_dir}")

configure_package_config_file(cmake/FlashDmAttnConfig.cmake.in "${PROJECT_BINARY_DIR}/FlashDmAttnConfig.cmake"
  INSTALL_DESTINATION "${fdma_config_dir}")
# 0.x: a new minor version may change the C ABI (FDMA_ABI_VERSION), so only patch releases stand in for each other.
write_basic_package_version_file("${PROJECT_BINARY_DIR}/FlashDmAttnConfigVersion.cmake" COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/FlashDmAttnConfig.cmake" "${PROJECT_BINARY_DIR}/FlashDmAttnConfigVersion.cmake"
  DESTINATION "${fdma_config_dir}")

# The .pc file finds its prefix from its own place (${pcfiledir}), so the installed tree can be moved.
file(RELATIVE_PATH fdma_pc_prefix "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" fdma_pc_prefix "${fdma_pc_prefix}")
configure_file(cmake/flash_dmattn.pc.in "${PROJECT_BINARY_DIR}/flash_dmattn.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/flash_dmattn.pc" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
