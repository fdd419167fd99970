# wshost-man.cmake: writes the man page wshost(8) from `wshost --help` at build time, so the
# page lists exactly the flags the binary has. Run as
#   cmake -DWSHOST=<binary> -DOUT=<wshost.8> -DVERSION=<x.y.z> -P wshost-man.cmake
execute_process(COMMAND ${WSHOST} --help OUTPUT_VARIABLE help RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${WSHOST} --help failed (${rc})")
endif()

# roff: a backslash is \e, a minus in a flag is \-, a line may not start with . or '.
function(roff_escape out text)
  string(REPLACE "\\" "\\e" text "${text}")
  string(REPLACE "-" "\\-" text "${text}")
  string(REGEX REPLACE "^([.'])" "\\\\&\\1" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

set(options "")
string(REPLACE ";" "\\;" help "${help}")
string(REPLACE "\n" ";" lines "${help}")
foreach(line IN LISTS lines)
  if(line MATCHES "^  (--[a-z-]+)( V)? +(.*)$")
    set(flag "${CMAKE_MATCH_1}")
    set(arg "${CMAKE_MATCH_2}")
    roff_escape(flag "${flag}")
    roff_escape(text "${CMAKE_MATCH_3}")
    if(arg)
      string(APPEND options ".TP\n.BI \"${flag} \" value\n${text}\n")
    else()
      string(APPEND options ".TP\n.B ${flag}\n${text}\n")
    endif()
  elseif(line MATCHES "^ +\\((.*)\\)$")
    roff_escape(text "${CMAKE_MATCH_1}")
    string(APPEND options ".br\n(${text})\n")
  endif()
endforeach()
if(options STREQUAL "")
  message(FATAL_ERROR "no options found in ${WSHOST} --help")
endif()

file(WRITE "${OUT}" ".\\\" Generated from `wshost --help` by dist/man/wshost-man.cmake; edit those.
.TH WSHOST 8 \"\" \"wshost ${VERSION}\" \"System Administration\"
.SH NAME
wshost \\- host of cloud functions in C over WebSocket and HTTP
.SH SYNOPSIS
.B wshost
[\\fIoptions\\fR]
.SH DESCRIPTION
.B wshost
serves cloud functions, each a shared object in the plugins folder:
.I __websocket__.so
gets every WebSocket event and
.IR name .so
answers HTTP at
.RI / name .
Users, resume tokens and queued messages live in a SQLite database.
A changed function file is loaded while clients stay connected.
.PP
Every option is also an environment variable
.BI WSHOST_ NAME
(upper case, \\- becomes _); a flag wins over the variable.
The service reads them from
.IR /etc/wshost/wshost.env .
.SH OPTIONS
${options}.SH SIGNALS
.TP
.B SIGTERM, SIGINT
drain: close every connection with 1001, flush the store, exit 0.
.TP
.B SIGHUP
re-read the \\fB\\-\\-env\\-file\\fR in the serving process; connections stay open
(\\fBsystemctl reload wshost\\fR sends it).
.SH ENDPOINTS
.TP
.B /_/healthz
public liveness check.
.TP
.B /_/status, /_/users, /_/users/\\fIid\\fB, /_/push, /_/metrics
behind \\fBAuthorization: Bearer\\fR \\fItoken\\fR (\\fB\\-\\-admin\\-token\\fR);
\\fB/_/metrics\\fR is the Prometheus text format (public with \\fB\\-\\-metrics\\-public\\fR).
.TP
.B /_/rooms, /_/rooms/\\fIname\\fR
rooms and their members (admin token).
.TP
.B /_/quarantine, POST /_/quarantine/\\fIfunction\\fB/lift
functions kept out after a crash with the recent crash records, and lifting one
(admin token; \\fBwshostctl quarantine\\fR, \\fBwshostctl lift\\fR).
.SH FILES
.TP
.I /etc/wshost/wshost.env
settings of the systemd service (mode 0640, root:wshost: secrets go here).
Made from
.I /usr/share/wshost/wshost.env
when the package is installed and missing; never overwritten by an upgrade.
.TP
.I /var/lib/wshost/plugins
functions of the service (owned by root, mode 0755: deploying is root's act).
.TP
.I /var/lib/wshost/wshost.db
the SQLite database; \\fIadmin-token\\fR beside it when generated.
.SH SEE ALSO
.BR wshostctl (8),
.BR systemctl (1),
.BR sqlite3 (1),
.I /usr/share/wshost/examples
")
# Debian wants man pages compressed; -n keeps the name and time out of the header.
execute_process(COMMAND gzip -9n -c "${OUT}" OUTPUT_FILE "${OUT}.gz" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gzip ${OUT} failed (${rc})")
endif()
