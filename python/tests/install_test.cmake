# ctest python_install_tree: `cmake --install --component python` into a scratch prefix, then
# import sparsebudget from that tree (cwd and PYTHONPATH point away from the build and source
# trees) and run one attention call.
file(REMOVE_RECURSE ${PREFIX})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX} --component python
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc}):\n${out}\n${err}")
endif()
set(code [=[
import os, sys
import numpy as np
import sparsebudget as sb
prefix = os.path.realpath(sys.argv[1])
where = os.path.realpath(sb.__file__)
assert where.startswith(prefix + os.sep), f"imported {where}, not from the install tree {prefix}"
q = np.random.default_rng(0).standard_normal((1, 4, 32)).astype(np.float32)
k = np.random.default_rng(1).standard_normal((100, 2, 32)).astype(np.float32)
out = sb.attention(q, k, k, block_size=16)
assert out.shape == (1, 4, 32) and np.isfinite(out).all()
print("imported", where, "version", sb.__version__)
]=])
file(MAKE_DIRECTORY ${PREFIX}/cwd)
execute_process(COMMAND ${CMAKE_COMMAND} -E env PYTHONPATH=${PREFIX}/${SITE} PYTHONDONTWRITEBYTECODE=1
                        ${PYTHON} -c "${code}" ${PREFIX}
                WORKING_DIRECTORY ${PREFIX}/cwd RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "importing from the install tree failed (${rc}):\n${out}\n${err}")
endif()
