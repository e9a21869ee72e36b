#include "app.hpp"

int main(int argc, char** argv) {
  return netwatcher::host::run_netwatcher(argc, argv);
}
