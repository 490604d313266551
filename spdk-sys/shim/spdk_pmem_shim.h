/* State SPDK v20.07 keeps in its internal structs and offers no getter for. */
#ifndef SPDK_PMEM_SHIM_H
#define SPDK_PMEM_SHIM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

struct spdk_nvmf_subsystem;

/* Whether the subsystem is inactive: SPDK only assert()s it before destroying
 * one, which release builds compile out; the safe layer checks it first. */
bool spdk_pmem_nvmf_subsystem_is_inactive(const struct spdk_nvmf_subsystem *subsystem);

/* The ticks the reactor on `lcore` spent in thread polls that did work (SPDK
 * counts them in struct spdk_reactor, for framework_get_reactors, and offers
 * no getter); false when there is no reactor on that core. */
bool spdk_pmem_reactor_busy_tsc(uint32_t lcore, uint64_t *busy_tsc);

/* The same for the ticks spent in polls that found nothing to do. */
bool spdk_pmem_reactor_idle_tsc(uint32_t lcore, uint64_t *idle_tsc);

/* The controllers (connected hosts' sessions) of a subsystem; read on the
 * subsystem's thread, the application thread, which changes the list. */
uint32_t spdk_pmem_nvmf_subsystem_ctrlr_count(const struct spdk_nvmf_subsystem *subsystem);

/* Where SPDK's log lines go once formatted (the Rust side's rate limit). */
typedef void spdk_pmem_log_sink(int level, const char *file, int line, const char *func,
				const char *msg);

/* Routes the lines spdk_pmem_log_func gets to `sink` (NULL: straight to
 * spdk_pmem_log_emit). */
void spdk_pmem_log_set_sink(spdk_pmem_log_sink *sink);

/* A logfunc for spdk_app_opts.log: drops what SPDK 20.07's spdk_vlog would
 * drop (levels above both the print level and the log level), formats the
 * rest as it does, and hands the line to the sink. */
void spdk_pmem_log_func(int level, const char *file, const int line, const char *func,
			const char *format, va_list args);

/* Writes a line as spdk_vlog does: to stderr with a timestamp up to the
 * print level, to syslog up to the log level. */
void spdk_pmem_log_emit(int level, const char *file, int line, const char *func,
			const char *msg);

/* Registers the "keyring" subsystem (its save_config entries come from
 * `write_config`), which the nvmf subsystem depends on; call before
 * spdk_app_start. */
struct spdk_json_write_ctx;
void spdk_pmem_register_keyring_subsystem(void (*write_config)(struct spdk_json_write_ctx *w));

#endif
