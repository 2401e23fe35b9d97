# Shared by the interface packages in interfaces/ and the cloudseg package (../../CMakeLists.txt):
# build against the ROS 2 pip wheels.
#   include(../cmake/pip_wheels.cmake) before find_package(ament_cmake): without a sourced ROS
#   install, the ROS prefix is the Python environment itself.
#   cloudseg_fix_wheel_includes() after ament_package(): the wheels export
#   *__rosidl_generator_py targets whose include paths point at the wheel builder's Python.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
# (keyed on the wheels being there: the venv's .pth sets AMENT_PREFIX_PATH in its Pythons)
execute_process(COMMAND "${Python3_EXECUTABLE}" -c "import sys; print(sys.prefix)"
  OUTPUT_VARIABLE _py_prefix OUTPUT_STRIP_TRAILING_WHITESPACE)
if(EXISTS "${_py_prefix}/share/ament_cmake/cmake")
  list(APPEND CMAKE_PREFIX_PATH "${_py_prefix}")
endif()
if(NOT DEFINED ENV{AMENT_PREFIX_PATH})
  set(ENV{AMENT_PREFIX_PATH} "${_py_prefix}")
endif()

function(cloudseg_fix_wheel_includes)
  get_directory_property(_imported IMPORTED_TARGETS)
  foreach(_target IN LISTS _imported)
    if(_target MATCHES "__rosidl_generator_py$")
      get_target_property(_incs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
      foreach(_inc IN LISTS _incs)
        if(_inc AND NOT EXISTS "${_inc}")
          set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES
            "${Python3_INCLUDE_DIRS};${Python3_NumPy_INCLUDE_DIRS}")
          break()
        endif()
      endforeach()
    endif()
  endforeach()
endfunction()
