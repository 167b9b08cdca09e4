# Run PROGRAM and compare its standard output byte for byte with EXPECTED.
execute_process(COMMAND ${PROGRAM} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
file(READ ${EXPECTED} want)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} exited with ${rc}")
endif()
if(NOT out STREQUAL want)
  message(FATAL_ERROR "output differs.\n--- expected\n${want}--- got\n${out}")
endif()
