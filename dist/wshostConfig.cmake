# wshostConfig.cmake: find_package(wshost) for a project of cloud functions outside the wshost
# tree. Gives the target wshost::sdk (cloud.h and jansson) and add_cloud_function(<name> <src..>)
# from CloudFunction.cmake, installed next to this file, pointed at the installed header.
# Relocatable: everything is found relative to this file (<prefix>/share/wshost/cmake).
get_filename_component(_wshost_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

include(CMakeFindDependencyMacro)
find_dependency(PkgConfig)

# The host and the folder the Debian package serves functions from, for scripts and tests.
set(WSHOST_EXECUTABLE "${_wshost_prefix}/bin/wshost")
set(WSHOST_INCLUDE_DIR "${_wshost_prefix}/include/wshost")

set(CLOUD_SDK_INCLUDE_DIR "${WSHOST_INCLUDE_DIR}")
include("${CMAKE_CURRENT_LIST_DIR}/CloudFunction.cmake")
