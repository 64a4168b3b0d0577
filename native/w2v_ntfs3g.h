/* The includes libntfs-3g's public headers need before them (they assume a config.h). */
#ifndef W2V_NTFS3G_H
#define W2V_NTFS3G_H
#define HAVE_STDINT_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRING_H 1
#define HAVE_ERRNO_H 1
#define HAVE_TIME_H 1
#include <stdarg.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <ntfs-3g/types.h>
#include <ntfs-3g/device.h>
#include <ntfs-3g/device_io.h>
#include <ntfs-3g/volume.h>
#endif
