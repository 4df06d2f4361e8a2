# Warning flags for the project's own targets (never global).
function(sparsebudget_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wconversion -Wsign-conversion -Wshadow)
  if(SPARSEBUDGET_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# Sanitizers apply to everything built in this tree when asked for.
if(SPARSEBUDGET_SANITIZE)
  string(REPLACE ";" "," _sb_san "${SPARSEBUDGET_SANITIZE}")
  add_compile_options(-fsanitize=${_sb_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_sb_san})
endif()
