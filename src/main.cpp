// mooring: a host for LLM chat bots. Everything lives in the layers under src/;
// this is only the entry point.
#include "app/cli.hpp"

int main(int argc, char** argv) { return mooring::app::run_cli(argc, argv); }
