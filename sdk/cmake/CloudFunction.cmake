# CloudFunction.cmake: the target wshost::sdk (cloud.h and jansson) and
# add_cloud_function(<name> <sources...>), which builds <name>.so (no "lib" prefix) into
# CLOUD_FUNCTION_OUTPUT_DIR when set, otherwise into the current binary dir. Used in this tree
# (sdk/include) and installed next to wshostConfig.cmake, which points it at the installed header.
if(NOT CLOUD_SDK_INCLUDE_DIR)
  set(CLOUD_SDK_INCLUDE_DIR "${CMAKE_CURRENT_LIST_DIR}/../include")
endif()

if(NOT TARGET wshost::sdk)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(WSHOST_JANSSON REQUIRED IMPORTED_TARGET GLOBAL jansson)
  add_library(wshost::sdk INTERFACE IMPORTED)
  set_target_properties(wshost::sdk PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CLOUD_SDK_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES PkgConfig::WSHOST_JANSSON)
endif()

function(add_cloud_function name)
  add_library(${name} MODULE ${ARGN})
  # Only the CLOUD_FUNCTION entry points (marked visible in cloud.h) leave the .so.
  set_target_properties(${name} PROPERTIES PREFIX "" SUFFIX ".so" C_VISIBILITY_PRESET hidden)
  if(CLOUD_FUNCTION_OUTPUT_DIR)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${CLOUD_FUNCTION_OUTPUT_DIR}")
  endif()
  target_link_libraries(${name} PRIVATE wshost::sdk)
endfunction()
