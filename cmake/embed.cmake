# vs_embed_text(<file> <namespace> <function> <output.cpp>): generates
# `std::string_view <namespace>::<function>()` returning the file's text,
# regenerated whenever the file changes.
function(vs_embed_text input ns fn output)
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DINPUT=${input} -DNS=${ns} -DFN=${fn} -DOUTPUT=${output}
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    DEPENDS ${input} ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    COMMENT "Embedding ${input}")
endfunction()
