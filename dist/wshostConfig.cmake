# wshostConfig.cmake: find_package(wshost) for a project of cloud functions outside the wshost
# tree. Gives the target wshost::sdk (cloud.h and jansson) and add_cloud_function(<name> <src..>),
# which builds <name>.so (no "lib" prefix) into CLOUD_FUNCTION_OUTPUT_DIR when set.
# Relocatable: everything is found relative to this file (<prefix>/share/wshost/cmake).
get_filename_component(_wshost_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

include(CMakeFindDependencyMacro)
find_dependency(PkgConfig)
if(NOT TARGET wshost::sdk)
  pkg_check_modules(WSHOST_JANSSON REQUIRED IMPORTED_TARGET GLOBAL jansson)
  add_library(wshost::sdk INTERFACE IMPORTED)
  set_target_properties(wshost::sdk PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_wshost_prefix}/include/wshost"
    INTERFACE_LINK_LIBRARIES PkgConfig::WSHOST_JANSSON)
endif()

# The host and the folder the Debian package serves functions from, for scripts and tests.
set(WSHOST_EXECUTABLE "${_wshost_prefix}/bin/wshost")
set(WSHOST_INCLUDE_DIR "${_wshost_prefix}/include/wshost")

function(add_cloud_function name)
  add_library(${name} MODULE ${ARGN})
  # Only the CLOUD_FUNCTION entry points (marked visible in cloud.h) leave the .so.
  set_target_properties(${name} PROPERTIES PREFIX "" SUFFIX ".so" C_VISIBILITY_PRESET hidden)
  if(CLOUD_FUNCTION_OUTPUT_DIR)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${CLOUD_FUNCTION_OUTPUT_DIR}")
  endif()
  target_link_libraries(${name} PRIVATE wshost::sdk)
endfunction()
