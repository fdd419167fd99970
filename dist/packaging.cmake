# packaging.cmake: what `cmake --install` (and `make install PREFIX=...`) puts where, and the
# Debian package `make deb` builds from the same rules with CPack. Included by CMakeLists.txt.
#
#   bin/wshost, bin/wshostctl                    the host and the operator's command
#   include/wshost/cloud.h                       the SDK (-I<prefix>/include/wshost, or
#                                                #include <wshost/cloud.h>)
#   share/pkgconfig/wshost.pc                    pkg-config --cflags --libs wshost
#   share/wshost/cmake/wshostConfig*.cmake       find_package(wshost): wshost::sdk, add_cloud_function
#   share/wshost/examples/                       the example functions and a CMakeLists.txt for them
#   share/wshost/wshost.env                      the settings template (the package's postinst
#                                                copies it to /etc/wshost/wshost.env if missing)
#   share/wshost/wshost.json                     the --config template, copied the same way to
#                                                /etc/wshost/wshost.json (the unit passes it)
#   share/man/man8/wshost.8.gz, wshostctl.8.gz   from `wshost --help` / `wshostctl --help`
#   share/doc/wshost/copyright, changelog.Debian.gz
#   lib/systemd/system/wshost.service            Type=notify, hardened; installed, never enabled
#   etc/wshost/wshost.env                        a plain install only: the package ships none in
#                                                /etc (no conffile, so no prompt on upgrade)
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

# Man pages, generated from --help at build time and compressed as Debian wants them (-n: no
# name or time stamp in the gzip header, so a rebuild gives the same bytes).
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/dist/wshost.8 ${CMAKE_BINARY_DIR}/dist/wshost.8.gz
  COMMAND ${CMAKE_COMMAND} -DWSHOST=$<TARGET_FILE:wshost> -DOUT=${CMAKE_BINARY_DIR}/dist/wshost.8
          -DVERSION=${WSHOST_VERSION} -P ${CMAKE_SOURCE_DIR}/dist/man/wshost-man.cmake
  DEPENDS wshost ${CMAKE_SOURCE_DIR}/dist/man/wshost-man.cmake
  COMMENT "Generating the man page wshost(8) from wshost --help")
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/dist/wshostctl.8 ${CMAKE_BINARY_DIR}/dist/wshostctl.8.gz
  COMMAND /usr/bin/python3 -B ${CMAKE_SOURCE_DIR}/dist/man/wshostctl-man.py
          ${CMAKE_SOURCE_DIR}/tools/wshostctl ${CMAKE_BINARY_DIR}/dist/wshostctl.8 ${WSHOST_VERSION}
  DEPENDS ${CMAKE_SOURCE_DIR}/tools/wshostctl ${CMAKE_SOURCE_DIR}/dist/man/wshostctl-man.py
  COMMENT "Generating the man page wshostctl(8) from wshostctl --help")
add_custom_target(wshost-man ALL DEPENDS ${CMAKE_BINARY_DIR}/dist/wshost.8.gz
                                         ${CMAKE_BINARY_DIR}/dist/wshostctl.8.gz)
install(FILES ${CMAKE_BINARY_DIR}/dist/wshost.8.gz ${CMAKE_BINARY_DIR}/dist/wshostctl.8.gz
        DESTINATION share/man/man8)

# The package's documents: the copyright (DEP-5) and the Debian changelog, whose newest entry
# must name the version being built (checked here, so they cannot drift apart).
set(WSHOST_DEB_RELEASE 1)
file(STRINGS ${CMAKE_SOURCE_DIR}/dist/deb/changelog _wshost_changelog_top LIMIT_COUNT 1)
if(NOT _wshost_changelog_top MATCHES "^wshost \\(${WSHOST_VERSION}-${WSHOST_DEB_RELEASE}\\) ")
  message(FATAL_ERROR "dist/deb/changelog starts with \"${_wshost_changelog_top}\": its newest "
                      "entry must be wshost (${WSHOST_VERSION}-${WSHOST_DEB_RELEASE})")
endif()
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/dist/changelog.Debian.gz
  COMMAND gzip -9n -c ${CMAKE_SOURCE_DIR}/dist/deb/changelog > ${CMAKE_BINARY_DIR}/dist/changelog.Debian.gz
  DEPENDS ${CMAKE_SOURCE_DIR}/dist/deb/changelog
  COMMENT "Compressing the Debian changelog")
add_custom_target(wshost-changelog ALL DEPENDS ${CMAKE_BINARY_DIR}/dist/changelog.Debian.gz)
install(FILES ${CMAKE_SOURCE_DIR}/dist/deb/copyright ${CMAKE_BINARY_DIR}/dist/changelog.Debian.gz
        DESTINATION share/doc/wshost)

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
  set(WSHOST_CONFIG_FILE \"\${WSHOST_ETC}/wshost.json\")
  set(WSHOST_BINDIR \"\${CMAKE_INSTALL_PREFIX}/bin\")
  configure_file(\"${CMAKE_SOURCE_DIR}/dist/systemd/wshost.service.in\"
                 \"${CMAKE_BINARY_DIR}/dist/install/wshost.service\" @ONLY)
  configure_file(\"${CMAKE_SOURCE_DIR}/dist/wshost.env.in\"
                 \"${CMAKE_BINARY_DIR}/dist/install/wshost.env\" @ONLY)
  file(INSTALL \"${CMAKE_BINARY_DIR}/dist/install/wshost.service\"
       DESTINATION \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")
  file(INSTALL \"${CMAKE_BINARY_DIR}/dist/install/wshost.env\"
       DESTINATION \"\${CMAKE_INSTALL_PREFIX}/share/wshost\"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  # Secrets (admin token, JWT secret, Redis password) go in it: nobody but root and the
  # service's group may read it (the package makes that group wshost).
  file(INSTALL \"${CMAKE_BINARY_DIR}/dist/install/wshost.env\" DESTINATION \"\${WSHOST_ETC}\"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
  # The JSON settings (--config, keyed by the flags' names): the same template and rules.
  file(INSTALL \"${CMAKE_SOURCE_DIR}/dist/wshost.json\"
       DESTINATION \"\${CMAKE_INSTALL_PREFIX}/share/wshost\"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  file(INSTALL \"${CMAKE_SOURCE_DIR}/dist/wshost.json\" DESTINATION \"\${WSHOST_ETC}\"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
")

# make deb: one package with the host (stripped), its tools, the SDK and the unit; the host's
# debug info in a file beside it (dist/deb/prebuild.cmake).
# Depends on runtime packages only (dpkg-shlibdeps finds the libraries; lws's libev loop is
# dlopen'ed, so named). WSHOST_MAINTAINER names who answers for the package you build.
set(WSHOST_MAINTAINER "wshost maintainers <wshost-maintainers@example.org>"
    CACHE STRING "Maintainer field of the Debian package: Name <address>")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME wshost)
set(CPACK_PACKAGE_VERSION ${WSHOST_VERSION})
set(CPACK_DEBIAN_PACKAGE_RELEASE ${WSHOST_DEB_RELEASE})
set(CPACK_PACKAGE_CONTACT "${WSHOST_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${WSHOST_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "host of cloud functions in C over WebSocket and HTTP")
# One line per line of the control file's extended description (at most 80 columns each).
set(CPACK_PACKAGE_DESCRIPTION "Laf-style cloud functions written in C, each a shared object,
served over WebSocket and HTTP by one libwebsockets server, with users and an
offline queue in SQLite and hot reload. A supervisor restarts the serving
process after a crash in a function and quarantines the function.
.
Includes the systemd unit (installed, not enabled), the operator's command
wshostctl, and the SDK for functions (cloud.h, pkg-config, CMake).")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
execute_process(COMMAND dpkg --print-architecture OUTPUT_VARIABLE CPACK_DEBIAN_PACKAGE_ARCHITECTURE
                OUTPUT_STRIP_TRAILING_WHITESPACE)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libwebsockets-evlib-ev, python3, passwd")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "build-essential, pkg-config, libjansson-dev, cmake, prometheus")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/dist/deb/postinst ${CMAKE_SOURCE_DIR}/dist/deb/prerm
    ${CMAKE_SOURCE_DIR}/dist/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# DESTDIR staging with the real prefix, so the install code above sees /usr and writes /etc.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# ... then the staged /etc goes, and the debug info is split off (dist/deb/prebuild.cmake).
set(CPACK_PRE_BUILD_SCRIPTS ${CMAKE_SOURCE_DIR}/dist/deb/prebuild.cmake)
set(CPACK_WSHOST_LINTIAN_OVERRIDES ${CMAKE_SOURCE_DIR}/dist/deb/lintian-overrides)
include(CPack)
