# add_cloud_function(<name> <sources...>): builds <name>.so (no "lib" prefix) from the given
# sources against sdk/include/cloud.h and jansson. Output goes to CLOUD_FUNCTION_OUTPUT_DIR
# when set, otherwise to the current binary dir.
find_package(PkgConfig REQUIRED)
pkg_check_modules(CLOUD_JANSSON REQUIRED jansson)
set(CLOUD_SDK_INCLUDE_DIR "${CMAKE_CURRENT_LIST_DIR}/../include")

function(add_cloud_function name)
  add_library(${name} MODULE ${ARGN})
  set_target_properties(${name} PROPERTIES PREFIX "" SUFFIX ".so" C_VISIBILITY_PRESET hidden)
  if(CLOUD_FUNCTION_OUTPUT_DIR)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${CLOUD_FUNCTION_OUTPUT_DIR}")
  endif()
  target_include_directories(${name} PRIVATE ${CLOUD_SDK_INCLUDE_DIR} ${CLOUD_JANSSON_INCLUDE_DIRS})
  target_link_libraries(${name} PRIVATE ${CLOUD_JANSSON_LIBRARIES})
endfunction()
