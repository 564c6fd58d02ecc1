/* The coldstart bench's baseline: the native counterpart of apps/hello,
 * built with `gcc -static -O2` so that, like a Flint image, it needs no
 * dynamic loader. One write(2), like the guest's one CONSOLE_WRITE. */
#include <unistd.h>

int main(void)
{
    static const char msg[] = "Hello, world!\n";
    return write(1, msg, sizeof msg - 1) == (ssize_t)(sizeof msg - 1) ? 0 : 1;
}
