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

# Tests and examples: the same strictness minus the sign/float conversion families, which
# flag every index computation in reference code without catching real bugs there.
function(sparsebudget_test_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow)
  if(SPARSEBUDGET_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
