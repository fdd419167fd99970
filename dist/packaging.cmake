# packaging.cmake: what `cmake --install` (and `make install PREFIX=...`) puts where, and the
# Debian package `make deb` builds from the same rules with CPack. Included by CMakeLists.txt.
#
#   bin/wshost, bin/wshostctl                    the host and the operator's command
#   include/wshost/cloud.h                       the SDK (-I<prefix>/include/wshost, or
#                                                #include <wshost/cloud.h>)
#   share/pkgconfig/wshost.pc                    pkg-config --cflags --libs wshost
#   share/wshost/cmake/wshostConfig*.cmake       find_package(wshost): wshost::sdk, add_cloud_function
#   share/wshost/examples/                       the example functions and a CMakeLists.txt for them
#   share/man/man8/wshost.8                      from `wshost --help`, at build time
#   lib/systemd/system/wshost.service            Type=notify, hardened; installed, never enabled
#   etc/wshost/wshost.env                        /etc/wshost/wshost.env when the prefix is /usr
set(WSHOST_VERSION ${PROJECT_VERSION}) # project() in CMakeLists.txt

install(TARGETS wshost RUNTIME DESTINATION bin)
install(PROGRAMS ${CMAKE_SOURCE_DIR}/tools/wshostctl DESTINATION bin)
install(FILES ${CMAKE_SOURCE_DIR}/sdk/include/cloud.h DESTINATION include/wshost)

configure_file(${CMAKE_SOURCE_DIR}/dist/wshost.pc.in ${CMAKE_BINARY_DIR}/dist/wshost.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/dist/wshost.pc DESTINATION share/pkgconfig)

include(CMakePackageConfigHelpers)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/dist/wshostConfigVersion.cmake
                                 VERSION ${WSHOST_VERSION} COMPATIBILITY SameMajorVersion
                                 ARCH_INDEPENDENT)
install(FILES ${CMAKE_SOURCE_DIR}/dist/wshostConfig.cmake
              ${CMAKE_SOURCE_DIR}/sdk/cmake/CloudFunction.cmake
              ${CMAKE_BINARY_DIR}/dist/wshostConfigVersion.cmake
        DESTINATION share/wshost/cmake)

file(GLOB WSHOST_EXAMPLE_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/plugins/*.c)
install(FILES ${WSHOST_EXAMPLE_SOURCES} ${CMAKE_SOURCE_DIR}/dist/examples/CMakeLists.txt
        DESTINATION share/wshost/examples)

add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/dist/wshost.8
  COMMAND ${CMAKE_COMMAND} -DWSHOST=$<TARGET_FILE:wshost> -DOUT=${CMAKE_BINARY_DIR}/dist/wshost.8
          -DVERSION=${WSHOST_VERSION} -P ${CMAKE_SOURCE_DIR}/dist/man/wshost-man.cmake
  DEPENDS wshost ${CMAKE_SOURCE_DIR}/dist/man/wshost-man.cmake
  COMMENT "Generating the man page wshost(8) from wshost --help")
add_custom_target(wshost-man ALL DEPENDS ${CMAKE_BINARY_DIR}/dist/wshost.8)
install(FILES ${CMAKE_BINARY_DIR}/dist/wshost.8 DESTINATION share/man/man8)

# The unit and the settings file name absolute paths, so they are written at install time,
# when the prefix is known (cmake --install --prefix, or /usr inside CPack). The prefix /usr
# is the system's: /etc and /var/lib; any other keeps them under the prefix.
install(CODE "
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(WSHOST_ETC /etc/wshost)
    set(WSHOST_STATE_DIR /var/lib/wshost)
  else()
    set(WSHOST_ETC \"\${CMAKE_INSTALL_PREFIX}/etc/wshost\")
    set(WSHOST_STATE_DIR \"\${CMAKE_INSTALL_PREFIX}/var/lib/wshost\")
  endif()
  set(WSHOST_ENV_FILE \"\${WSHOST_ETC}/wshost.env\")
  set(WSHOST_BINDIR \"\${CMAKE_INSTALL_PREFIX}/bin\")
  configure_file(\"${CMAKE_SOURCE_DIR}/dist/systemd/wshost.service.in\"
                 \"${CMAKE_BINARY_DIR}/dist/install/wshost.service\" @ONLY)
  configure_file(\"${CMAKE_SOURCE_DIR}/dist/wshost.env.in\"
                 \"${CMAKE_BINARY_DIR}/dist/install/wshost.env\" @ONLY)
  file(INSTALL \"${CMAKE_BINARY_DIR}/dist/install/wshost.service\"
       DESTINATION \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")
  file(INSTALL \"${CMAKE_BINARY_DIR}/dist/install/wshost.env\" DESTINATION \"\${WSHOST_ETC}\"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
")

# make deb: one package with the host, its tools, the SDK and the unit. Depends on runtime
# packages only (dpkg-shlibdeps finds the libraries; lws's libev loop is dlopen'ed, so named).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME wshost)
set(CPACK_PACKAGE_VERSION ${WSHOST_VERSION})
set(CPACK_PACKAGE_CONTACT "wshost maintainers <root@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "host of cloud functions in C over WebSocket and HTTP")
set(CPACK_PACKAGE_DESCRIPTION "Laf-style cloud functions written in C, each a shared object, \
served over WebSocket and HTTP by one libwebsockets server, with users and an offline queue in \
SQLite and hot reload. Includes the systemd unit (not enabled) and the SDK for functions \
(cloud.h, pkg-config, CMake).")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libwebsockets-evlib-ev, python3, passwd")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "build-essential, pkg-config, libjansson-dev, cmake, prometheus")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/dist/deb/postinst ${CMAKE_SOURCE_DIR}/dist/deb/prerm
    ${CMAKE_SOURCE_DIR}/dist/deb/postrm ${CMAKE_SOURCE_DIR}/dist/deb/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# DESTDIR staging with the real prefix, so the install code above sees /usr and writes /etc.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
include(CPack)
