/* Built against the SPDK tree spdk-sys built (lib/nvmf's internal header,
 * spdk_internal/event.h for the reactors). */
#include "nvmf_internal.h"
#include "spdk_internal/event.h"
#include "spdk/log.h"
#include "spdk_pmem_shim.h"

#include <syslog.h>
#include <time.h>

bool
spdk_pmem_nvmf_subsystem_is_inactive(const struct spdk_nvmf_subsystem *subsystem)
{
	return subsystem->state == SPDK_NVMF_SUBSYSTEM_INACTIVE;
}

bool
spdk_pmem_reactor_busy_tsc(uint32_t lcore, uint64_t *busy_tsc)
{
	struct spdk_reactor *reactor = spdk_reactor_get(lcore);

	if (reactor == NULL) {
		return false;
	}
	*busy_tsc = reactor->busy_tsc;
	return true;
}

bool
spdk_pmem_reactor_idle_tsc(uint32_t lcore, uint64_t *idle_tsc)
{
	struct spdk_reactor *reactor = spdk_reactor_get(lcore);

	if (reactor == NULL) {
		return false;
	}
	*idle_tsc = reactor->idle_tsc;
	return true;
}

uint32_t
spdk_pmem_nvmf_subsystem_ctrlr_count(const struct spdk_nvmf_subsystem *subsystem)
{
	const struct spdk_nvmf_ctrlr *ctrlr;
	uint32_t count = 0;

	TAILQ_FOREACH(ctrlr, &subsystem->ctrlrs, link) {
		count++;
	}
	return count;
}

static spdk_pmem_log_sink *g_sink;

void
spdk_pmem_log_set_sink(spdk_pmem_log_sink *sink)
{
	__atomic_store_n(&g_sink, sink, __ATOMIC_RELEASE);
}

void
spdk_pmem_log_func(int level, const char *file, const int line, const char *func,
		   const char *format, va_list args)
{
	/* spdk_vlog's MAX_TMPBUF. */
	char buf[1024];
	spdk_pmem_log_sink *sink;

	if (level == SPDK_LOG_DISABLED ||
	    (level > (int)spdk_log_get_print_level() && level > (int)spdk_log_get_level())) {
		return;
	}
	vsnprintf(buf, sizeof(buf), format, args);
	sink = __atomic_load_n(&g_sink, __ATOMIC_ACQUIRE);
	if (sink != NULL) {
		sink(level, file, line, func, buf);
	} else {
		spdk_pmem_log_emit(level, file, line, func, buf);
	}
}

/* spdk_vlog's, from lib/log/log.c of SPDK 20.07 (static there). */
static const char *const g_level_names[] = {
	[SPDK_LOG_ERROR]	= "ERROR",
	[SPDK_LOG_WARN]		= "WARNING",
	[SPDK_LOG_NOTICE]	= "NOTICE",
	[SPDK_LOG_INFO]		= "INFO",
	[SPDK_LOG_DEBUG]	= "DEBUG",
};

void
spdk_pmem_log_emit(int level, const char *file, int line, const char *func, const char *msg)
{
	int severity = LOG_INFO;
	char timestamp[64], date[24];
	struct timespec ts;
	struct tm info;

	if (level < SPDK_LOG_ERROR || level > SPDK_LOG_DEBUG) {
		return;
	}
	switch (level) {
	case SPDK_LOG_ERROR:
		severity = LOG_ERR;
		break;
	case SPDK_LOG_WARN:
		severity = LOG_WARNING;
		break;
	case SPDK_LOG_NOTICE:
		severity = LOG_NOTICE;
		break;
	default:
		break;
	}
	if (level <= (int)spdk_log_get_print_level()) {
		clock_gettime(CLOCK_REALTIME, &ts);
		if (localtime_r(&ts.tv_sec, &info) == NULL) {
			snprintf(timestamp, sizeof(timestamp), "[%s.%06ld] ", "unknown date", ts.tv_nsec / 1000);
		} else {
			strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &info);
			snprintf(timestamp, sizeof(timestamp), "[%s.%06ld] ", date, ts.tv_nsec / 1000);
		}
		if (file) {
			fprintf(stderr, "%s%s:%4d:%s: *%s*: %s", timestamp, file, line, func,
				g_level_names[level], msg);
		} else {
			fprintf(stderr, "%s%s", timestamp, msg);
		}
	}
	if (level <= (int)spdk_log_get_level()) {
		if (file) {
			syslog(severity, "%s:%4d:%s: *%s*: %s", file, line, func, g_level_names[level], msg);
		} else {
			syslog(severity, "%s", msg);
		}
	}
}

/* The keyring (Rust's src/keyring.rs) as an SPDK subsystem of its own, so
 * save_config writes its keys ahead of the nvmf subsystem that uses them, as
 * upstream SPDK's "keyring" subsystem does. */
static void (*g_keyring_write_config)(struct spdk_json_write_ctx *w);

static void
keyring_subsystem_init(void)
{
	spdk_subsystem_init_next(0);
}

static void
keyring_subsystem_fini(void)
{
	spdk_subsystem_fini_next();
}

static void
keyring_subsystem_write_config_json(struct spdk_json_write_ctx *w)
{
	g_keyring_write_config(w);
}

static struct spdk_subsystem g_keyring_subsystem = {
	.name = "keyring",
	.init = keyring_subsystem_init,
	.fini = keyring_subsystem_fini,
	.write_config_json = keyring_subsystem_write_config_json,
};

static struct spdk_subsystem_depend g_nvmf_depends_on_keyring = {
	.name = "nvmf",
	.depends_on = "keyring",
};

void
spdk_pmem_register_keyring_subsystem(void (*write_config)(struct spdk_json_write_ctx *w))
{
	static bool registered;

	g_keyring_write_config = write_config;
	if (!registered) {
		registered = true;
		spdk_add_subsystem(&g_keyring_subsystem);
		spdk_add_subsystem_depend(&g_nvmf_depends_on_keyring);
	}
}
