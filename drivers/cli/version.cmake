# Writes version.cpp with the git commit of the source tree; run at every build (cmake -P) and
# replaces the file only when its text changes, so an unchanged commit recompiles nothing.
# In:  SRC (source dir), OUT (generated file), IN (template), VERSION (project version).
execute_process(COMMAND git -C "${SRC}" rev-parse --short=12 HEAD
                OUTPUT_VARIABLE COWLAB_GIT_COMMIT RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT rc EQUAL 0 OR COWLAB_GIT_COMMIT STREQUAL "")
  set(COWLAB_GIT_COMMIT "unknown")
else()
  # Tracked files that differ from the commit make the build "dirty" (untracked ones do not).
  execute_process(COMMAND git -C "${SRC}" diff-index --quiet HEAD -- RESULT_VARIABLE dirty ERROR_QUIET)
  if(NOT dirty EQUAL 0)
    set(COWLAB_GIT_COMMIT "${COWLAB_GIT_COMMIT}-dirty")
  endif()
endif()
set(COWLAB_VERSION "${VERSION}")
configure_file("${IN}" "${OUT}.tmp" @ONLY)
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
