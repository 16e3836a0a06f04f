"""The HAL contract: everything the application may ask of a board.

The application (``pile/``) never imports ``machine`` or ``network``; it receives one
board object built by ``hal.load(board_cfg, opts)`` and uses only the methods below.
Two implementations exist: ``hal.esp32.Board`` (real hardware) and ``hal.sim.Board``
(the simulated board of the unix port, with its bench port).  Both must offer all of it.

Time
    now_ms() -> int          wall clock, Unix-epoch milliseconds (the ESP32 epoch of
                             2000 is converted by the HAL).  0 < value; may jump when set.
    set_time_ms(ms)          set the wall clock (from NTP or a trusted platform timestamp).
    time_trusted() -> bool   True once NTP or the platform has set the clock.
    ticks_ms() -> int        monotonic milliseconds for intervals; compare only with
                             time.ticks_diff.  On the simulated board it may run faster
                             than real time (``speed``); energy, timeouts and cadences
                             are all measured with it.
    speed -> int             how many board milliseconds pass per real millisecond (1 on
                             hardware).  Tasks sleep real time: sleep_ms(ms // speed).

Control pilot
    cp_set(duty)             duty in percent, int: 100 = steady +12 V (no PWM, idle),
                             0 = steady -12 V (state F, unavailable), 1..99 = 1 kHz PWM.
                             Allocates nothing: the fail-safe calls it out of memory.
    cp_read() -> (hi, lo)    the CP plateau voltages in millivolts (signed ints): hi is
                             the high level (12000 A, 9000 B, 6000 C, 3000 D, 0 E, -12000
                             F); lo is the low level while PWM runs (-12000 when the
                             vehicle diode is present), equal to hi without PWM.  A
                             reading at the ADC's rail is passed on as it is (the
                             application judges it implausible: fault 3012).

Contactor (relay) and connector lock
    relay_set(closed)        drive the contactor coil.  Safe to call from an IRQ;
                             allocates nothing (pile.gun.fail_safe calls it when the heap
                             is exhausted): the output moves even when nothing else can.
    relay_feedback() -> bool auxiliary contact: True when the contacts are closed.
    lock_set(locked)         drive the connector lock motor/solenoid.
    lock_feedback() -> bool  True when the lock reports locked.

Measurement
    async adc_burst() -> (v, i, period_us)
                             one burst of simultaneous mains samples whose phases tile
                             whole mains cycles: ``v`` and ``i`` are array('h') of raw
                             ADC counts (0..4095), ``period_us`` the sampling period.
                             Cooperative: taken in slices with awaits between, no
                             slice blocking the loop more than ~5 ms.  The arrays may be
                             reused by the next burst.
                             Convert with the board's calibration (board file ``cal``:
                             v_offset, i_offset in counts; v_uv, i_ua in microvolts /
                             microamps per count).
    gun_temp() -> int        connector temperature, 0.1 degC (None if no sensor); a
                             broken sensor (open or short) reads as very hot (2500).

Protective inputs
    estop() -> bool          True while the emergency stop is pressed.
    leakage() -> bool        True while the residual-current detector trips.
    async leak_selftest() -> bool
                             run the RCD test winding; True when the detector answered
                             (awaits while the test runs: up to 2 x rcd_ms).
    stop_button() -> bool    True once per press of the local stop button (latched
                             until read).
    on_alarm(callback)       register callback(name) called at once (IRQ on hardware)
                             when estop or leakage asserts; it may only do IRQ-safe
                             work such as relay_set(False) and setting flags.

Watchdog
    wdt_start(timeout_ms)    arm the watchdog; it resets the board when not fed in time.
    wdt_feed()
    reset_cause() -> str     'power', 'watchdog' or 'soft' for the last reset.

Network and identity
    net_up() -> bool         True when the station has an IP address.
    net_poll()               keep the network connected (called about once a second;
                             must return at once).
    cpu_id() -> str          unique id of the controller (hex of machine.unique_id()).
    mac() -> str             network MAC, 12 upper-case hex digits.
    storage -> str           directory where the firmware keeps its files ('' = cwd).

Life cycle
    tasks() -> list          coroutines the board needs run (the bench port, the
                             simulated world); the app creates a task for each.
    shutdown()               make the hardware safe: relay open, PWM off (+12 V).
    close()                  the application stopped at the console (Ctrl-C): disarm the
                             watchdog or keep it fed, release the board's own services.
    bench_handlers           dict the app fills with its bench commands (unused on hardware).
"""


def load(board_cfg, opts):
    """Build the board for this platform: hal.sim on the unix port, hal.esp32 on a chip."""
    import sys
    if sys.platform == "esp32":
        from hal.esp32 import Board
    else:
        from hal.sim import Board
    return Board(board_cfg, opts)
