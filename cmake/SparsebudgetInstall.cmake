# Install rules: headers, the library, an exported sparsebudget::sparsebudget target,
# sparsebudget-config.cmake + version file, and sparsebudget.pc. Included at the end of the
# top-level CMakeLists.txt. On by default only when sparsebudget is the top-level project.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

option(SPARSEBUDGET_INSTALL "Generate the install rules" ${_sb_top})
if(NOT SPARSEBUDGET_INSTALL)
  return()
endif()

set(SPARSEBUDGET_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/sparsebudget
    CACHE STRING "Where sparsebudget-config.cmake is installed (relative to the prefix)")
set(SPARSEBUDGET_INSTALL_PKGCONFIGDIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig
    CACHE STRING "Where sparsebudget.pc is installed (relative to the prefix)")

install(TARGETS sparsebudget EXPORT sparsebudget-targets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT sparsebudget_development
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT sparsebudget_runtime
          NAMELINK_COMPONENT sparsebudget_development
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT sparsebudget_runtime
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/sparsebudget
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT sparsebudget_development
  FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h")
install(EXPORT sparsebudget-targets NAMESPACE sparsebudget::
  DESTINATION ${SPARSEBUDGET_INSTALL_CMAKEDIR} COMPONENT sparsebudget_development)

# A static library carries its private dependencies into the consumer's link (exported as
# $<LINK_ONLY:...>), so the config must find them; a shared one needs none of them.
get_target_property(_sb_type sparsebudget TYPE)
if(_sb_type STREQUAL "STATIC_LIBRARY")
  set(SPARSEBUDGET_CONFIG_STATIC ON)
else()
  set(SPARSEBUDGET_CONFIG_STATIC OFF)
endif()
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/sparsebudget-config.cmake.in
  ${PROJECT_BINARY_DIR}/sparsebudget-config.cmake
  INSTALL_DESTINATION ${SPARSEBUDGET_INSTALL_CMAKEDIR})
# 0.x: minor versions may break the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/sparsebudget-config-version.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/sparsebudget-config.cmake
              ${PROJECT_BINARY_DIR}/sparsebudget-config-version.cmake
  DESTINATION ${SPARSEBUDGET_INSTALL_CMAKEDIR} COMPONENT sparsebudget_development)

# pkg-config. The prefix is found relative to the .pc file, so the tree can be moved and
# `cmake --install --prefix DIR` works. A static libsparsebudget is C++: a C program linking it
# also needs the C++ runtime and threads, which then go into Libs (pkg-config --libs without
# --static ignores Libs.private).
set(_sb_pc_cxx_libs "-lstdc++ -lm -pthread")
if(SPARSEBUDGET_CONFIG_STATIC)
  set(SPARSEBUDGET_PC_LIBS "${_sb_pc_cxx_libs}")
  set(SPARSEBUDGET_PC_LIBS_PRIVATE "")
else()
  set(SPARSEBUDGET_PC_LIBS "")
  set(SPARSEBUDGET_PC_LIBS_PRIVATE "${_sb_pc_cxx_libs}")
endif()
if(IS_ABSOLUTE "${SPARSEBUDGET_INSTALL_PKGCONFIGDIR}")
  set(SPARSEBUDGET_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _sb_pc_up "/_root/${SPARSEBUDGET_INSTALL_PKGCONFIGDIR}" "/_root")
  string(REGEX REPLACE "/$" "" _sb_pc_up "${_sb_pc_up}")
  set(SPARSEBUDGET_PC_PREFIX "\${pcfiledir}/${_sb_pc_up}")
endif()
foreach(_d LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_d}}")
    set(SPARSEBUDGET_PC_${_d} "${CMAKE_INSTALL_${_d}}")
  else()
    set(SPARSEBUDGET_PC_${_d} "\${prefix}/${CMAKE_INSTALL_${_d}}")
  endif()
endforeach()
configure_file(${CMAKE_CURRENT_LIST_DIR}/sparsebudget.pc.in ${PROJECT_BINARY_DIR}/sparsebudget.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/sparsebudget.pc
  DESTINATION ${SPARSEBUDGET_INSTALL_PKGCONFIGDIR} COMPONENT sparsebudget_development)
