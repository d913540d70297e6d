"""GTFS import: the real Caltrain feed (skipped when absent) and small feeds the tests write."""

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from envs.rail_disruption import RailDisruptionEnv
from simulators.railway import default_scenario, run_scenario
from simulators.railway.demand import read_demand_csv
from simulators.railway.gtfs import load_gtfs_scenario
from simulators.railway.rules import DispatchPlan, preferred_mode

STOPS = """stop_id,stop_name,parent_station,location_type
A,A Station,,0
HUB,Hub Station,,1
HUB1,Hub Station,HUB,0
HUB2,Hub Station,HUB,0
B,B Station,,0
C,C Station,,0
D,D Station,,0
YARD,Depot Yard,,0
"""
CALENDAR = """service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date
WK,1,1,1,1,1,0,0,20240101,20241231
"""
CALENDAR_DATES = """service_id,date,exception_type
WK,20240704,2
"""


def _times(start_min: int, stops: list[str], runs: list[int]) -> list[tuple[str, str]]:
    out, t = [], start_min
    for i, stop in enumerate(stops):
        clock = f"{t // 60:02d}:{t % 60:02d}:00"
        out.append((stop, clock))
        if i < len(runs):
            t += runs[i]
    return out


def write_rail_feed(folder: Path) -> Path:
    """Line A - Hub - B - C - D; locals every 20 min, expresses skip B; the return direction too."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stops.txt").write_text(STOPS)
    (folder / "calendar.txt").write_text(CALENDAR)
    (folder / "calendar_dates.txt").write_text(CALENDAR_DATES)
    (folder / "routes.txt").write_text("route_id,route_short_name,route_long_name,route_type\nL1,L1,Line one,2\n")
    trips = ["route_id,service_id,trip_id,direction_id"]
    stop_times = ["trip_id,arrival_time,departure_time,stop_id,stop_sequence"]
    for k, start in enumerate(range(6 * 60, 10 * 60, 20)):
        for kind, stops, runs in (
            ("loc", ["A", "HUB1", "B", "C", "D"], [5, 4, 6, 7]),
            ("exp", ["A", "HUB1", "C", "D"], [5, 9, 7]),
            ("ret", ["D", "C", "B", "HUB2", "A"], [7, 6, 4, 5]),
        ):
            if kind == "exp" and k % 2:
                continue
            trip = f"{kind}{k}"
            trips.append(f"L1,WK,{trip},{1 if kind == 'ret' else 0}")
            for seq, (stop, clock) in enumerate(_times(start + (3 if kind == "exp" else 0), stops, runs), start=1):
                stop_times.append(f"{trip},{clock},{clock},{stop},{seq}")
    (folder / "trips.txt").write_text("\n".join(trips) + "\n")
    (folder / "stop_times.txt").write_text("\n".join(stop_times) + "\n")
    return folder


def write_subway_feed(folder: Path, explicit: bool = False) -> Path:
    """A subway line (route_type 1) leaving Central every 5 minutes from 06:00 to 08:55: one frequency-based
    template trip (whose own times start at 05:30), or with ``explicit`` one trip per run."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stops.txt").write_text("stop_id,stop_name\nS0,Central\nS1,Market\nS2,Park\nS3,Harbor\n")
    (folder / "calendar.txt").write_text(CALENDAR)
    (folder / "routes.txt").write_text("route_id,route_short_name,route_long_name,route_type\nM,M,Metro,1\n")
    starts = range(6 * 60, 9 * 60, 5) if explicit else [5 * 60 + 30]
    trips, rows = ["route_id,service_id,trip_id,direction_id"], ["trip_id,arrival_time,departure_time,stop_id,stop_sequence"]
    for k, start in enumerate(starts):
        trips.append(f"M,WK,m{k},0")
        for seq, (stop, clock) in enumerate(_times(start, ["S0", "S1", "S2", "S3"], [2, 3, 2]), start=1):
            rows.append(f"m{k},{clock},{clock},{stop},{seq}")
    (folder / "trips.txt").write_text("\n".join(trips) + "\n")
    (folder / "stop_times.txt").write_text("\n".join(rows) + "\n")
    if not explicit:
        (folder / "frequencies.txt").write_text("trip_id,start_time,end_time,headway_secs\nm0,06:00:00,09:00:00,300\n")
    return folder


def _greedy(model):
    plan = DispatchPlan(model)
    for r in range(model.n_routes):
        plan.add(r, preferred_mode(plan.mask[r]), 1)
    return plan.modes, plan.consists


def test_small_rail_feed_builds_routes_timetable_and_running_times(tmp_path):
    sc = load_gtfs_scenario(write_rail_feed(tmp_path / "rail"), "hub station", "2024-03-04", horizon_min=240)
    routes = {r.name: r for r in sc.network.routes}
    out = routes["L1 > D Station"]
    assert out.stops == ("Hub Station", "B Station", "C Station", "D Station")
    assert out.express == ("C Station", "D Station")
    assert out.departures[:3] == (5.0, 8.0, 25.0)  # 06:05 local, 06:08 express, 06:25 local
    back = routes["L1 > A Station"]
    assert back.stops == ("Hub Station", "A Station") and back.departures[0] == 17.0
    runs = {frozenset((s.u, s.v)): s.run_min for s in sc.network.sections}
    assert runs[frozenset(("Hub Station", "B Station"))] == 4 and runs[frozenset(("C Station", "D Station"))] == 7
    assert sc.start_of_day_min == 360 and sc.horizon_min == 240
    _, kpis = run_scenario(sc, _greedy)
    assert kpis["trains_dispatched"] > 0


def test_zipped_feed_in_a_subfolder_gives_the_same_scenario(tmp_path):
    folder = write_rail_feed(tmp_path / "rail")
    archive = tmp_path / "rail.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in folder.iterdir():
            z.write(f, f"gtfs/{f.name}")
    a = load_gtfs_scenario(folder, "Hub Station", "20240304")
    b = load_gtfs_scenario(archive, "Hub Station", "20240304")
    assert a.network == b.network


def test_subway_feed_with_frequencies(tmp_path):
    sc = load_gtfs_scenario(write_subway_feed(tmp_path / "metro"), "Market", "20240305", horizon_min=120)
    (route,) = sc.network.routes
    assert route.stops == ("Market", "Park", "Harbor")
    # start_time is the departure from the trip's first stop (Central); Market is 2 minutes on: 06:02 .. 07:57
    assert route.departures == tuple(np.arange(2.0, 120.0, 5.0))
    explicit = load_gtfs_scenario(write_subway_feed(tmp_path / "trips", explicit=True), "Market", "20240305",
                                  horizon_min=120)
    assert explicit.network == sc.network
    with pytest.raises(ValueError, match="no trips of route types"):
        load_gtfs_scenario(tmp_path / "metro", "Market", "20240305", route_types=[2])


@pytest.mark.parametrize(
    "hub, day, fragment",
    [("Hub Statoin", "20240304", "did you mean 'Hub Station'"), ("Nowhere", "20240304", "not a stop name"),
     ("Hub Station", "20230304", "no service runs on 20230304.*covers 20240101 to 20241231"),
     ("Hub Station", "20240704", "no service runs on 20240704"), ("Depot Yard", "20240304", "no trips"),
     ("Hub Station", "March 4", "YYYYMMDD")],
)
def test_feed_errors_are_clear(tmp_path, hub, day, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_gtfs_scenario(write_rail_feed(tmp_path / "rail"), hub, day)


@pytest.mark.parametrize(
    "file, old, new, fragment",
    [("routes.txt", "route_type", "kind", r"routes.txt lacks the columns \['route_type'\]"),
     ("routes.txt", "Line one,2", "Line one,rail", "routes.txt line 2: route_type 'rail' is not an integer"),
     ("stop_times.txt", "B,3", "B,3.5", "stop_times.txt line 4: stop_sequence '3.5' is not an integer"),
     ("stop_times.txt", ",B,", ",B9,", "trip 'loc0' calls at stop_id 'B9', which stops.txt does not define"),
     ("trips.txt", "L1,WK,exp0", "L2,WK,exp0", r"route_id \['L2'\] that routes.txt does not define")],
)
def test_malformed_feeds_are_named(tmp_path, file, old, new, fragment):
    folder = write_rail_feed(tmp_path / "rail")
    (folder / file).write_text((folder / file).read_text().replace(old, new, 1))
    with pytest.raises(ValueError, match=fragment):
        load_gtfs_scenario(folder, "Hub Station", "20240304")


def test_a_bad_value_is_named_at_its_line_in_the_file(tmp_path):
    folder = write_rail_feed(tmp_path / "rail")
    lines = (folder / "stop_times.txt").read_text().splitlines()
    bad = next(i for i, line in enumerate(lines) if line.startswith("loc1,") and line.endswith(",3"))
    lines[bad] = lines[bad][:-1] + "3.5"  # a later trip's row: the error must count lines of the file
    (folder / "stop_times.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"stop_times.txt line {bad + 1}: stop_sequence '3.5'"):
        load_gtfs_scenario(folder, "Hub Station", "20240304")


def test_blank_lines_do_not_shift_the_line_an_error_names(tmp_path):
    folder = write_rail_feed(tmp_path / "rail")
    lines = (folder / "stop_times.txt").read_text().splitlines()
    lines.insert(3, "")  # pandas skips blank lines: counting rows would name the line before
    bad = next(i for i, line in enumerate(lines) if line.startswith("loc1,") and line.endswith(",3"))
    lines[bad] = lines[bad][:-1] + "3.5"
    (folder / "stop_times.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"stop_times.txt line {bad + 1}: stop_sequence '3.5'"):
        load_gtfs_scenario(folder, "Hub Station", "20240304")


def test_a_feed_without_direction_id_keeps_the_two_directions_apart(tmp_path):
    folder = write_rail_feed(tmp_path / "rail")
    with_id = load_gtfs_scenario(folder, "Hub Station", "20240304", horizon_min=240).network.routes
    trips = folder / "trips.txt"
    trips.write_text("".join(",".join(line.split(",")[:3]) + "\n" for line in trips.read_text().splitlines()))
    without = load_gtfs_scenario(folder, "Hub Station", "20240304", horizon_min=240).network.routes
    assert [r.name for r in with_id] == ["L1 > D Station", "L1 > A Station"]
    assert [(r.name, r.stops, r.departures) for r in without] == [(r.name, r.stops, r.departures) for r in with_id]


@pytest.mark.parametrize("day", ["20240304", "20240305"])  # after a day without and with service
def test_a_window_without_trains_is_an_error_naming_the_service_span(tmp_path, day):
    with pytest.raises(ValueError, match="no train leaves hub 'Hub Station' between 12:00 .* run from 06:05 to 09:57"):
        load_gtfs_scenario(write_rail_feed(tmp_path / "rail"), "Hub Station", day, start_time="12:00", horizon_min=240)


def test_trips_past_midnight_of_the_previous_service_day_run_in_an_early_window(tmp_path):
    folder = tmp_path / "night"
    folder.mkdir()
    (folder / "stops.txt").write_text("stop_id,stop_name\nS0,Central\nS1,Market\nS2,Park\n")
    (folder / "calendar.txt").write_text(CALENDAR)  # weekdays: Friday's night trips run early on Saturday
    (folder / "routes.txt").write_text("route_id,route_short_name,route_type\nM,M,1\n")
    trips, stop_times = ["route_id,service_id,trip_id"], ["trip_id,arrival_time,departure_time,stop_id,stop_sequence"]
    for k, start in enumerate([23 * 60 + 10, 24 * 60 + 30, 25 * 60 + 15]):
        trips.append(f"M,WK,t{k}")
        for seq, (stop, clock) in enumerate(_times(start, ["S0", "S1", "S2"], [3, 3]), start=1):
            stop_times.append(f"t{k},{clock},{clock},{stop},{seq}")
    (folder / "trips.txt").write_text("\n".join(trips) + "\n")
    (folder / "stop_times.txt").write_text("\n".join(stop_times) + "\n")
    tuesday = load_gtfs_scenario(folder, "Central", "20240305", start_time="00:00", horizon_min=120)
    assert tuesday.network.routes[0].departures == (30.0, 75.0)  # Monday's 24:30 and 25:15
    saturday = load_gtfs_scenario(folder, "Central", "20240309", start_time="00:00", horizon_min=120)
    assert saturday.network.routes[0].departures == (30.0, 75.0)  # Friday's, though WK has no Saturday service
    monday = load_gtfs_scenario(folder, "Central", "20240304", start_time="23:00", horizon_min=180)
    assert monday.network.routes[0].departures == (10.0, 90.0, 135.0)  # the day's own trips past 24:00
    (folder / "frequencies.txt").write_text("trip_id,start_time,end_time,headway_secs\nt0,23:10:00,26:10:00,1800\n")
    saturday = load_gtfs_scenario(folder, "Central", "20240309", start_time="00:00", horizon_min=120)
    assert saturday.network.routes[0].departures == (10.0, 30.0, 40.0, 70.0, 75.0, 100.0)  # t0's runs past 24:00 too


def test_distinct_stations_sharing_a_name_stay_apart(tmp_path):
    folder = tmp_path / "two_park_st"
    folder.mkdir()
    (folder / "stops.txt").write_text("stop_id,stop_name,parent_station,location_type\nC,Central,,0\nA1,Alpha,,0\n"
                                      "PX,Park St,,1\nP1,Park St,PX,0\nT1,Tango,,0\nB2,Bravo,,0\nPY,Park St,,1\n"
                                      "P2,Park St,PY,0\nT2,Uniform,,0\n")  # PX, PY: two stations, one name
    (folder / "calendar.txt").write_text(CALENDAR)
    (folder / "routes.txt").write_text("route_id,route_short_name,route_type\nX,X,1\nY,Y,1\n")
    trips, stop_times = ["route_id,service_id,trip_id"], ["trip_id,arrival_time,departure_time,stop_id,stop_sequence"]
    for k, start in enumerate(range(6 * 60, 8 * 60, 20)):
        for route, stops in (("X", ["C", "A1", "P1", "T1"]), ("Y", ["C", "B2", "P2", "T2"])):
            trips.append(f"{route},WK,{route}{k}")
            for seq, (stop, clock) in enumerate(_times(start, stops, [4, 4, 4]), start=1):
                stop_times.append(f"{route}{k},{clock},{clock},{stop},{seq}")
    (folder / "trips.txt").write_text("\n".join(trips) + "\n")
    (folder / "stop_times.txt").write_text("\n".join(stop_times) + "\n")
    sc = load_gtfs_scenario(folder, "Central", "20240305", horizon_min=120, closed_section=("Alpha", "Park St (PX)"))
    assert [r.stops for r in sc.network.routes] == [("Central", "Alpha", "Park St (PX)", "Tango"),
                                                    ("Central", "Bravo", "Park St (PY)", "Uniform")]
    with pytest.raises(ValueError, match=r"hub stop 'park st' names 2 stations: 'Park St \(PX\)', 'Park St \(PY\)'"):
        load_gtfs_scenario(folder, "park st", "20240305")
    stops = folder / "stops.txt"  # PY missing from stops.txt: its platform's name stands for it, still apart from PX
    stops.write_text(stops.read_text().replace("PY,Park St,,1\n", ""))
    sc = load_gtfs_scenario(folder, "Central", "20240305", horizon_min=120, closed_section=("Alpha", "Park St (PX)"))
    assert sc.network.routes[1].stops == ("Central", "Bravo", "Park St (PY)", "Uniform")


def write_lines(folder: Path, stops: str, lines: list, directions: bool = True) -> Path:
    """A feed of ``lines`` = (route, direction_id, stop_ids) run every 20 min from 06:00 to 08:00, 4 min per section."""
    folder.mkdir(parents=True)
    (folder / "stops.txt").write_text(stops)
    (folder / "calendar.txt").write_text(CALENDAR)
    routes = sorted({route for route, _, _ in lines})
    (folder / "routes.txt").write_text("route_id,route_short_name,route_type\n" + "".join(f"{r},{r},1\n" for r in routes))
    trips = ["route_id,service_id,trip_id" + (",direction_id" if directions else "")]
    stop_times = ["trip_id,arrival_time,departure_time,stop_id,stop_sequence"]
    for k, start in enumerate(range(6 * 60, 8 * 60, 20)):
        for j, (route, direction, stop_ids) in enumerate(lines):
            trip = f"{route}{j}_{k}"
            trips.append(f"{route},WK,{trip}" + (f",{direction}" if directions else ""))
            for seq, (stop, clock) in enumerate(_times(start + 2 * j, stop_ids, [4] * (len(stop_ids) - 1)), start=1):
                stop_times.append(f"{trip},{clock},{clock},{stop},{seq}")
    (folder / "trips.txt").write_text("\n".join(trips) + "\n")
    (folder / "stop_times.txt").write_text("\n".join(stop_times) + "\n")
    return folder


def test_a_circle_line_without_direction_id_keeps_its_two_directions_apart(tmp_path):
    stops = "stop_id,stop_name\nH,Hub\nA,Alpha\nB,Bravo\nC,Charlie\n"
    circle = [("O", 0, ["H", "A", "B", "C"]), ("O", 1, ["H", "C", "B", "A"])]  # the same stations, reversed
    routes = [[(r.name, r.stops, r.departures) for r in load_gtfs_scenario(
        write_lines(tmp_path / str(ids), stops, circle, ids), "Hub", "20240305", horizon_min=120).network.routes]
        for ids in (True, False)]
    assert routes[0] == routes[1] and [stops for _, stops, _ in routes[0]] == [("Hub", "Alpha", "Bravo", "Charlie"),
                                                                            ("Hub", "Charlie", "Bravo", "Alpha")]


def test_boarding_areas_and_blank_lines_of_spaces_change_nothing(tmp_path):
    plain = load_gtfs_scenario(write_rail_feed(tmp_path / "plain" / "rail"), "Hub Station", "20240304")
    folder = write_rail_feed(tmp_path / "rail")
    stops = folder / "stops.txt"  # a boarding area's parent is a platform (GTFS pathways), whose parent is the station
    stops.write_text(stops.read_text() + "BA1,Hub Station,HUB1,4\n")
    routes = folder / "routes.txt"
    routes.write_text(routes.read_text() + "   \n")
    assert load_gtfs_scenario(folder, "Hub Station", "20240304") == plain
    demand = tmp_path / "demand.csv"
    demand.write_text("time,route,count\n06:10,North,5\n \n06:20,North,5\n")
    assert read_demand_csv(demand, default_scenario().network, 360, 60).sum() == 10


def test_frequencies_need_a_positive_headway(tmp_path):
    folder = write_subway_feed(tmp_path / "metro")
    (folder / "frequencies.txt").write_text("trip_id,start_time,end_time,headway_secs\nm0,06:00:00,09:00:00,0\n")
    with pytest.raises(ValueError, match="trip 'm0' has headway_secs '0'; allowed: > 0"):
        load_gtfs_scenario(folder, "Market", "20240305")


def test_missing_files_and_paths_are_named(tmp_path):
    folder = write_rail_feed(tmp_path / "rail")
    with pytest.raises(ValueError, match="does not exist"):
        load_gtfs_scenario(tmp_path / "nothing", "Hub Station", "20240304")
    (folder / "stop_times.txt").unlink()
    with pytest.raises(ValueError, match="lacks stop_times.txt"):
        load_gtfs_scenario(folder, "Hub Station", "20240304")


def test_demand_csv_drives_a_gtfs_scenario(tmp_path):
    folder = write_rail_feed(tmp_path / "rail")
    csv = tmp_path / "demand.csv"
    csv.write_text("time,destination,count,duration_min\n06:00,C Station,600,60\n06:30,A Station,50,10\n")
    sc = load_gtfs_scenario(folder, "Hub Station", "20240304", horizon_min=120, demand_csv=csv)
    assert np.isclose(sc.demand.rates.sum(), 650)
    _, kpis = run_scenario(sc, _greedy)
    assert 500 < kpis["passengers_arrived"] < 800


def test_caltrain_feed(shared_data, tmp_path):
    feed = shared_data / "gtfs" / "caltrain-2017-07-24"
    if not feed.is_dir():
        pytest.skip(f"{feed} is absent")
    sc = load_gtfs_scenario(feed, "Millbrae Caltrain", "20170724")
    assert len(sc.network.routes) >= 4
    for route in sc.network.routes:
        assert route.stops[0] == "Millbrae Caltrain"
        assert all(0 <= d <= sc.horizon_min for d in route.departures)
    assert {r.stops[-1] for r in sc.network.routes} >= {"San Francisco Caltrain"}
    assert all(0 < s.run_min < 60 for s in sc.network.sections)
    env = RailDisruptionEnv({"scenario": sc})
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    zipped = shutil.make_archive(str(tmp_path / "caltrain"), "zip", feed)
    assert load_gtfs_scenario(zipped, "Millbrae Caltrain", "20170724").network == sc.network
