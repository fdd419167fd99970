# prebuild.cmake: CPack runs this on the staged tree before it packs (CPACK_PRE_BUILD_SCRIPTS).
#
# 1. The package ships no file in /etc, so dpkg has no conffile to prompt about on upgrade: a
#    plain install writes etc/wshost/wshost.env, the package's postinst copies
#    /usr/share/wshost/wshost.env there when it is missing and leaves it alone after.
#    The lintian overrides go in (a plain install has no use for them).
# 2. The host is shipped stripped; its debug info goes to a file beside the package,
#    <package dir>/wshost_<version>_<arch>.debug, named by the binary's build id and its
#    .gnu_debuglink. Install it as /usr/lib/debug/.build-id/<first 2 hex>/<rest>.debug and gdb
#    finds it (`readelf -n /usr/bin/wshost` prints the id).
set(stage "${CPACK_TEMPORARY_INSTALL_DIRECTORY}")
if(NOT IS_DIRECTORY "${stage}/usr/bin")
  message(FATAL_ERROR "no staged tree at \"${stage}\"")
endif()
file(REMOVE_RECURSE "${stage}/etc")
# What lintian is told to accept, each with its reason: the package's business only.
file(MAKE_DIRECTORY "${stage}/usr/share/lintian/overrides")
configure_file("${CPACK_WSHOST_LINTIAN_OVERRIDES}"
               "${stage}/usr/share/lintian/overrides/${CPACK_PACKAGE_NAME}" COPYONLY)

set(bin "${stage}/usr/bin/wshost")
execute_process(COMMAND readelf -n "${bin}" OUTPUT_VARIABLE notes RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT notes MATCHES "Build ID: ([0-9a-f]+)")
  message(FATAL_ERROR "no build id in ${bin} (readelf -n: ${rc})")
endif()
set(build_id "${CMAKE_MATCH_1}")
set(debug "${CPACK_PACKAGE_DIRECTORY}/${CPACK_PACKAGE_NAME}_${CPACK_PACKAGE_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}_${CPACK_DEBIAN_PACKAGE_ARCHITECTURE}.debug")
foreach(step "--only-keep-debug;${bin};${debug}"
             "--strip-debug;--strip-unneeded;--remove-section=.comment;--remove-section=.note;${bin}"
             "--add-gnu-debuglink=${debug};${bin}")
  execute_process(COMMAND objcopy ${step} RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "objcopy ${step}: ${err}")
  endif()
endforeach()
message(STATUS "debug info of /usr/bin/wshost (build id ${build_id}): ${debug}")
